from django.urls import path
from rest_framework.routers import SimpleRouter

from access.api import ApiKeyViewSet, WsTicketView

router = SimpleRouter()
router.register("keys", ApiKeyViewSet, basename="api-key")
urlpatterns = [
    path("ws-tickets/", WsTicketView.as_view(), name="ws-ticket"),
    *router.urls,
]
