from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from monitoring.api import StatsView

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/dashboard/", permanent=False)),
    # Before admin.site.urls, whose catch-all would otherwise answer these with a 404.
    path("admin/dashboard/", include("monitoring.urls")),
    path("admin/", admin.site.urls),
    path("api/stats/", StatsView.as_view(), name="api-stats"),
    path("api/", include("access.urls")),
    path("api/", include("assets.urls")),
    path("api/", include("webhooks.urls")),
    path("api/", include("jobs.urls")),
    path("api/", include("workflow_templates.urls")),
]
