from rest_framework.routers import SimpleRouter

from access.api import ApiKeyViewSet

router = SimpleRouter()
router.register("keys", ApiKeyViewSet, basename="api-key")
urlpatterns = router.urls
