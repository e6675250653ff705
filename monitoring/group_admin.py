"""Groups of jobs in the admin: each with its progress and status summed up from its jobs
(jobs.group_summary), its jobs listed on its page, and a cancel for all that still wait or run.

A page of groups reads its groups' jobs in one query (a prefetch), never one query per row.
"""

from __future__ import annotations

from typing import ClassVar

from django.contrib import admin, messages
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from jobs.group_summary import GroupSummary, MemberState, group_summary
from jobs.groups import job_group_cancel
from jobs.models import Job, JobGroup
from jobs.selectors import MEMBER_FIELDS, may_change_others_jobs
from monitoring.job_admin import STATUS_COLOURS

JOBS_SHOWN = 500


def _summary(group: JobGroup) -> GroupSummary:
    return group_summary([MemberState(job.pk, job.status, job.progress, job.retry_of_id) for job in group.jobs.all()])


@admin.register(JobGroup)
class JobGroupAdmin(admin.ModelAdmin):
    list_display = [
        "short_id",
        "name",
        "kind",
        "project",
        "shot",
        "user",
        "template_label",
        "jobs_total",
        "progress",
        "status",
    ]
    list_filter = ["kind", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["=id", "name", "=project", "=shot", "user__username"]
    list_select_related = ["user"]
    list_per_page = 50
    show_full_result_count = False
    actions = ["cancel_groups"]
    fields: ClassVar[tuple[str, ...]] = (
        "id",
        "name",
        "kind",
        "project",
        "shot",
        "tags",
        "user",
        "created_at",
        "template_label",
        "status",
        "progress",
        "jobs",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[JobGroup]:
        members = Job.objects.only(*MEMBER_FIELDS).order_by("created_at", "id")
        return super().get_queryset(request).prefetch_related(Prefetch("jobs", queryset=members))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # groups are made by running a template as a batch (the API)

    def has_change_permission(self, request: HttpRequest, obj: JobGroup | None = None) -> bool:
        return False  # nothing of a group is edited; cancelling is an action of its own

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return may_change_others_jobs(request.user)

    @admin.display(description="id")
    def short_id(self, group: JobGroup) -> str:
        return str(group.id)[:8]

    @admin.display(description="template")
    def template_label(self, group: JobGroup) -> str:
        first = next(iter(group.jobs.all()), None)
        return f"{first.template_name} v{first.template_version}" if first and first.template_name else "-"

    @admin.display(description="jobs")
    def jobs_total(self, group: JobGroup) -> str:
        url = reverse("admin:jobs_job_changelist") + f"?group={group.pk}"
        return format_html('<a href="{}">{}</a>', url, _summary(group).total)

    @admin.display(description="progress")
    def progress(self, group: JobGroup) -> str:
        percent = round(_summary(group).progress * 100)
        return format_html(
            '<div class="group-progress" style="width:100px;background:#e9ecef;border-radius:3px" title="{}%">'
            '<div style="width:{}%;background:{};height:8px;border-radius:3px"></div></div>',
            percent,
            percent,
            STATUS_COLOURS["completed" if percent == 100 else "running"],
        )

    @admin.display(description="status")
    def status(self, group: JobGroup) -> str:
        summary = _summary(group)
        counts = ", ".join(f"{count} {status}" for status, count in sorted(summary.counts.items()))
        return format_html(
            '<span class="status-badge" style="background:{};color:#fff;padding:2px 6px;border-radius:3px">{}</span>'
            " {}",
            STATUS_COLOURS.get(summary.status, "#6c757d"),
            summary.status,
            counts,
        )

    @admin.display(description="jobs")
    def jobs(self, group: JobGroup) -> SafeString:
        rows = list(group.jobs.all()[:JOBS_SHOWN])
        body = format_html_join(
            "",
            '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}%</td><td>{}</td></tr>',
            (
                (
                    reverse("admin:jobs_job_change", args=[job.pk]),
                    str(job.pk)[:8],
                    job.name,
                    job.status,
                    round(job.progress * 100),
                    job.failure_category or "",
                )
                for job in rows
            ),
        )
        head = "<tr><th>job</th><th>name</th><th>status</th><th>progress</th><th>failure</th></tr>"
        return format_html('<table class="group-jobs">{}{}</table>', SafeString(head), body)

    @admin.action(description="Cancel the waiting and running jobs of the selected groups", permissions=["cancel"])
    def cancel_groups(self, request: HttpRequest, queryset: QuerySet[JobGroup]) -> None:
        asked = sum(job_group_cancel(group) for group in queryset)
        self.message_user(request, f"cancel requested for {asked} job(s)", messages.SUCCESS)
