from django.contrib import admin
from django.urls import include, path

from monitoring.api import StatsView

urlpatterns = [
    # Before admin.site.urls, whose catch-all would otherwise answer these with a 404.
    path("admin/dashboard/", include("monitoring.urls")),
    path("admin/", admin.site.urls),
    path("api/stats/", StatsView.as_view(), name="api-stats"),
    path("api/", include("jobs.urls")),
]
