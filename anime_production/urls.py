from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from access.api import api_not_found
from access.docs import DocsView, SchemaView
from access.login import StudioLoginView
from comfy_api.urls import root_patterns as comfy_root_patterns
from metrics.views import metrics_view
from monitoring.api import StatsView

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/dashboard/", permanent=False)),
    # Before admin.site.urls, whose catch-all would otherwise answer these with a 404.
    path("admin/dashboard/", include("monitoring.urls")),
    path("admin/", admin.site.urls),
    # Every active user, staff or not (the editor's artists); the admin's login admits staff only.
    path("accounts/login/", StudioLoginView.as_view(), name="login"),
    path("metrics", metrics_view, name="metrics"),
    path("api/stats/", StatsView.as_view(), name="api-stats"),
    path("api/schema/", SchemaView.as_view(), name="api-schema"),
    path("api/docs/", DocsView.as_view(), name="api-docs"),
    path("api/", include("access.urls")),
    path("api/", include("assets.urls")),
    path("api/", include("webhooks.urls")),
    path("api/", include("jobs.urls")),
    path("api/", include("workflow_templates.urls")),
    path("api/", include("quotas.urls")),
    # ComfyUI's API (the front door), and its paths at the root for clients that drop a base path.
    path("comfy/", include("comfy_api.urls")),
    path("", include(comfy_root_patterns)),
    # Last: whatever no route above took (a malformed id, an unknown path) is a JSON 404.
    re_path(r"^api/(?:[\s\S]*/)?$", api_not_found),  # [\s\S]: a newline (%0A) too
]
