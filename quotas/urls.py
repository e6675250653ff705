from django.urls import path

from quotas.api import MyQuotaView, QuotaListView

urlpatterns = [
    path("quotas/", QuotaListView.as_view(), name="quota-list"),
    path("quotas/me/", MyQuotaView.as_view(), name="quota-me"),
]
