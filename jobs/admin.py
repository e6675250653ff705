from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from jobs import services
from jobs.models import FINAL_STATUSES, Job, JobOutput

STATUS_COLOURS = {
    "queued": "#6c757d",
    "submitted": "#0d6efd",
    "running": "#0d6efd",
    "completed": "#198754",
    "failed": "#dc3545",
    "cancelled": "#adb5bd",
}


class JobOutputInline(admin.TabularInline):
    model = JobOutput
    extra = 0
    can_delete = False
    fields = ["node_id", "kind", "comfy_filename", "media_type", "size_bytes", "file"]
    readonly_fields = fields


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = [
        "short_id",
        "status_badge",
        "job_type",
        "backend",
        "priority",
        "progress_bar",
        "current_node_name",
        "wait",
        "run_time",
        "failure_category",
        "user",
        "created_at",
    ]
    list_filter = ["status", "job_type", "backend", "failure_category", "created_at"]
    search_fields = ["=id", "user__username"]
    date_hierarchy = "created_at"
    list_select_related = ["user"]
    show_full_result_count = False  # COUNT(*) over a million jobs on every page is waste
    actions = ["cancel_jobs"]
    inlines = [JobOutputInline]
    readonly_fields = [f.name for f in Job._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # jobs are submitted through the API, which validates and enqueues them

    @admin.display(description="id")
    def short_id(self, job: Job) -> str:
        return str(job.id)[:8]

    @admin.display(description="status", ordering="status")
    def status_badge(self, job: Job) -> str:
        colour = STATUS_COLOURS.get(job.status, "#6c757d")
        return format_html(
            '<span style="background:{};color:#fff;padding:2px 6px;border-radius:3px">{}</span>',
            colour,
            job.get_status_display(),
        )

    @admin.display(description="progress")
    def progress_bar(self, job: Job) -> str:
        percent = round(job.progress * 100)
        return format_html(
            '<div style="width:100px;background:#e9ecef;border-radius:3px" title="{}">'
            '<div style="width:{}%;background:#0d6efd;height:8px;border-radius:3px"></div></div>',
            job.progress_message,
            percent,
        )

    @admin.display(description="queue wait")
    def wait(self, job: Job) -> str:
        return _duration(job.wait_seconds)

    @admin.display(description="run time")
    def run_time(self, job: Job) -> str:
        return _duration(job.run_seconds)

    @admin.action(description="Cancel selected jobs")
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        count = 0
        for job in queryset.exclude(status__in=FINAL_STATUSES):
            services.job_cancel(job)
            count += 1
        self.message_user(request, f"cancel requested for {count} job(s)", messages.SUCCESS)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{seconds:.1f}s"
