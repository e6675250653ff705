from django.contrib import admin

from monitoring import (
    group_admin,  # noqa: F401  (registers the groups of jobs)
    job_admin,  # noqa: F401  (registers the job history pages)
    pipeline_admin,  # noqa: F401  (registers the shot pipelines)
)
from monitoring.models import BackendHealthSample

# The admin's front page leads to the dashboard pages (monitoring.urls).
admin.site.index_template = "monitoring/admin_index.html"


@admin.register(BackendHealthSample)
class BackendHealthSampleAdmin(admin.ModelAdmin):
    list_display = ["backend", "checked_at", "reachable", "queue_running", "queue_pending", "vram_free", "vram_total"]
    list_filter = ["backend", "reachable"]
    show_full_result_count = False
