"""Shot pipelines in the admin: the groups of kind `pipeline`, listed and summed up like any group
(monitoring.group_admin), and on each one's page its jobs as a table in an order where each comes
after the jobs it reads, with their upstream keys, and the ETA along the critical path (an estimate)."""

from __future__ import annotations

from typing import ClassVar

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from jobs.models import GroupKind, JobGroup
from jobs.pipeline_states import pipeline_eta, pipeline_job_rows, pipeline_jobs
from monitoring.group_admin import JobGroupAdmin
from monitoring.job_admin import STATUS_COLOURS
from monitoring.models import Pipeline

VIEW_GROUPS = "jobs.view_jobgroup"


@admin.register(Pipeline)
class PipelineAdmin(JobGroupAdmin):
    list_display = ["short_id", "name", "project", "shot", "user", "jobs_total", "progress", "status"]
    list_filter = [("created_at", admin.DateFieldListFilter)]
    fields: ClassVar[tuple[str, ...]] = (
        "id",
        "name",
        "project",
        "shot",
        "tags",
        "user",
        "created_at",
        "status",
        "progress",
        "eta",
        "dag",
    )
    readonly_fields = fields
    actions = ["cancel_groups"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[JobGroup]:
        return super().get_queryset(request).filter(kind=GroupKind.PIPELINE)

    def has_view_permission(self, request: HttpRequest, obj: JobGroup | None = None) -> bool:
        # Whoever may see groups of jobs may see pipelines: they are groups.
        return super().has_view_permission(request, obj) or request.user.has_perm(VIEW_GROUPS)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return super().has_module_permission(request) or request.user.has_perm(VIEW_GROUPS)

    @admin.display(description="ETA (estimate)")
    def eta(self, group: JobGroup) -> str:
        jobs, upstream = pipeline_jobs(group)
        estimate = pipeline_eta(jobs, upstream)
        if estimate is None:
            return "-"
        unknown = estimate["unknown_jobs"]
        note = f"; nothing known of {unknown} job(s)" if unknown else ""
        return f"about {_duration(estimate['remaining_seconds'])} of run time left ({estimate['basis']}{note})"

    @admin.display(description="jobs, each after the jobs it reads")
    def dag(self, group: JobGroup) -> SafeString:
        jobs, upstream = pipeline_jobs(group)
        rows = format_html_join(
            "",
            '<tr><td>{}</td><td><a href="{}">{}</a></td><td><span class="status-badge" style="background:{};'
            'color:#fff;padding:2px 6px;border-radius:3px">{}</span></td><td>{}%</td><td>{}</td><td>{}</td></tr>',
            (
                (
                    row["key"],
                    reverse("admin:jobs_job_change", args=[row["id"]]),
                    row["name"] or row["id"][:8],
                    STATUS_COLOURS.get(row["status"], "#6c757d"),
                    row["status"],
                    row["progress_percent"],
                    ", ".join(row["upstream"]) or "-",
                    row["failure_category"] or "",
                )
                for row in pipeline_job_rows(jobs, upstream)
            ),
        )
        head = "<tr><th>key</th><th>job</th><th>status</th><th>progress</th><th>reads</th><th>failure</th></tr>"
        return format_html('<table class="pipeline-jobs">{}{}</table>', SafeString(head), rows)


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m {rest:02d}s" if minutes else f"{rest}s"
