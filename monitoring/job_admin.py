"""Job history in the admin: fast at a million jobs, with the whole story of each job on its page.

Fast means: no COUNT(*) over the table (a capped count), no SELECT DISTINCT over it for the
filters (their choices come from settings and the roll-ups), searches that hit an index only
(exact or prefix ids through the primary key, usernames through auth_user's unique index), and
every filter backed by an index in `Job.Meta.indexes` that walks newest first.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any, cast

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.views.decorators.http import require_POST

from jobs import services
from jobs.filters import search_q
from jobs.models import FINAL_STATUSES, Job, JobStatus
from monitoring.job_dependencies_admin import JobDependencyFields
from monitoring.job_labels_admin import LABEL_COLUMNS, LABEL_FIELDS, LABEL_FILTERS, JobLabelsColumns
from monitoring.job_page import RETRYABLE_STATUSES, job_story
from monitoring.job_times import JobTimesColumns
from monitoring.output_thumbnails import OutputThumbnailColumn
from monitoring.stats import known_values

logger = logging.getLogger(__name__)

STATUS_COLOURS = {
    "queued": "#6c757d",
    "submitted": "#0d6efd",
    "running": "#0d6efd",
    "completed": "#198754",
    "failed": "#dc3545",
    "cancelled": "#adb5bd",
}
COUNT_CAP = 5_000
HEX_PREFIX = re.compile(r"[0-9a-f]{6,32}")


class CappedCountPaginator(Paginator):
    """Counts at most COUNT_CAP + 1 rows: an exact COUNT(*) over a million jobs costs more than the page."""

    @cached_property
    def count(self) -> int:
        # Without the ordering: any COUNT_CAP + 1 rows will do, and sorting them first cost 60 ms.
        # The admin's changelist always pages a QuerySet.
        jobs = cast(QuerySet[Job], self.object_list)
        return jobs.order_by()[: COUNT_CAP + 1].count()

    @property
    def capped(self) -> bool:
        return self.count > COUNT_CAP


class BackendFilter(admin.SimpleListFilter):
    title = "backend"
    parameter_name = "backend"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        names = sorted(set(settings.COMFYUI_BACKENDS) | set(known_values("backend")))
        return [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> QuerySet[Job]:
        return queryset.filter(backend=self.value()) if self.value() else queryset


class JobTypeFilter(admin.SimpleListFilter):
    title = "job type"
    parameter_name = "job_type"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        names = sorted(set(settings.JOB_TYPES) | set(known_values("job_type")))
        return [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> QuerySet[Job]:
        return queryset.filter(job_type=self.value()) if self.value() else queryset


class ErrorMessageFilter(admin.SimpleListFilter):
    """Reached from the failure page's "most common error messages"; shown only while active."""

    title = "error message"
    parameter_name = "error_message"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        value = self.value()
        return [(value, value[:80])] if value else []

    def queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> QuerySet[Job]:
        # A prefix: the roll-up keeps the first 500 characters of a message.
        prefix = self.value()
        return queryset.filter(error_message__startswith=prefix) if prefix else queryset


def job_search_q(term: str) -> Q:
    """Ids (full, or a prefix of at least 6 hex digits as the list shows them), exact usernames, and
    the labels as the API searches them (jobs.filters.search_q: a name prefix, a project, shot or tag).

    A UUID prefix becomes a range on the primary key (or the unique prompt_id): an index range
    scan, where `id::text LIKE 'abc%'` would read every row.
    """
    query = Q(pk__in=[])
    compact = term.lower().replace("-", "")
    if HEX_PREFIX.fullmatch(compact):
        low, high = uuid.UUID(compact.ljust(32, "0")), uuid.UUID(compact.ljust(32, "f"))
        query |= Q(pk__range=(low, high)) | Q(prompt_id__range=(low, high))
    user_ids = list(get_user_model().objects.filter(username=term).values_list("pk", flat=True))
    if user_ids:
        query |= Q(user_id__in=user_ids)
    return query | search_q(term)


def _traceback_text(lines: Any) -> str:
    if isinstance(lines, str):
        return lines
    if not isinstance(lines, list):
        return ""
    # ComfyUI's traceback entries usually end with a newline; some recorders strip it.
    return "".join(line if str(line).endswith("\n") else f"{line}\n" for line in map(str, lines))


def job_retry_or_explain(job: Job) -> tuple[Job | None, str]:
    """Retry a failed or cancelled job; say why not otherwise."""
    if job.status not in RETRYABLE_STATUSES:
        return None, f"Job {str(job.id)[:8]} is {job.status}; only failed or cancelled jobs can be retried."
    try:
        new_job = services.job_retry(job)
    except Exception as exc:  # the service's own refusal (a rule it enforces) is worth showing as is
        logger.exception("retry of job %s failed", job.id)
        return None, f"Job {str(job.id)[:8]} was not retried: {exc}"
    return new_job, f"Job {str(job.id)[:8]} retried as {str(new_job.id)[:8]}."


@admin.register(Job)
class JobAdmin(JobTimesColumns, JobLabelsColumns, OutputThumbnailColumn, JobDependencyFields):
    list_display = [
        "first_output",
        "short_id",
        *LABEL_COLUMNS,
        "status_badge",
        "job_type",
        "backend",
        "priority",
        "progress_bar",
        "wait",
        "run_time",
        "failure_category",
        "user",
        "created",
        "started",
        "finished",
    ]
    list_filter = [
        "status",
        JobTypeFilter,
        BackendFilter,
        "failure_category",
        ("created_at", admin.DateFieldListFilter),
        "finished_at",
        *LABEL_FILTERS,
        ErrorMessageFilter,
    ]
    search_fields = ["=id"]  # shows the search box; `get_search_results` does the searching
    search_help_text = (
        "A job or prompt id (whole, or its first 6+ characters), an exact username, project, shot or tag, "
        "or the start of a job's name."
    )
    list_select_related = ["user"]
    list_per_page = 50
    paginator = CappedCountPaginator
    show_full_result_count = False  # COUNT(*) over a million jobs on every page is waste
    show_facets = admin.ShowFacets.NEVER  # a COUNT per filter choice, over a million jobs, on every page
    # Sorting a million rows by an unindexed column takes seconds: only orders an index serves.
    sortable_by = ["created", "status_badge"]
    actions = ["cancel_jobs", "retry_jobs"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "id",
                    "status_badge",
                    "job_type",
                    "backend",
                    "waiting_for",
                    "requires",
                    "priority",
                    "user",
                    "progress_bar",
                    "progress_message",
                    "retry_of",
                    "retries_list",
                ]
            },
        ),
        (
            "Times",
            {
                "fields": [
                    "created",
                    "submitted",
                    "started",
                    "finished",
                    "wait",
                    "run_time",
                    "eta_finish",
                    "cancel_requested",
                ]
            },
        ),
        ("Labels", {"fields": [*LABEL_FIELDS]}),
        ("Pipeline", {"fields": ["pipeline_key", "upstream_jobs", "downstream_jobs"]}),
        ("Error", {"fields": ["failure_category", "error_message", "error_summary", "error_traceback"]}),
        (
            "Tracking",
            {
                "classes": ["collapse"],
                "fields": [
                    "prompt_id",
                    "attempt",
                    "deliveries",
                    "worker",
                    "client_id",
                    "heartbeat",
                    "current_node_id",
                    "current_node_class",
                    "current_node_name",
                    "step_value",
                    "step_max",
                    "nodes_done",
                    "nodes_total",
                    "cached_nodes",
                    "seq",
                    "fingerprint",
                ],
            },
        ),
        ("Workflow", {"classes": ["collapse"], "fields": ["workflow_pretty"]}),
    ]

    def get_readonly_fields(self, request: HttpRequest, obj: Job | None = None) -> list[str]:
        return flatten_fieldsets(self.fieldsets)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # jobs are submitted through the API, which validates and enqueues them

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Job], search_term: str
    ) -> tuple[QuerySet[Job], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(job_search_q(term)), False

    # --- list columns -------------------------------------------------------------------------

    @admin.display(description="id")
    def short_id(self, job: Job) -> str:
        return str(job.id)[:8]

    @admin.display(description="status", ordering="status")
    def status_badge(self, job: Job) -> str:
        colour = STATUS_COLOURS.get(job.status, "#6c757d")
        return format_html(
            '<span class="status-badge" style="background:{};color:#fff;padding:2px 6px;border-radius:3px">{}</span>',
            colour,
            job.get_status_display(),
        )

    @admin.display(description="progress")
    def progress_bar(self, job: Job) -> str:
        percent = round(job.progress * 100)
        colour = STATUS_COLOURS["completed"] if job.status == JobStatus.COMPLETED else STATUS_COLOURS["running"]
        return format_html(
            '<div class="job-progress" style="width:100px;background:#e9ecef;border-radius:3px" title="{} ({}%)">'
            '<div style="width:{}%;background:{};height:8px;border-radius:3px"></div></div>',
            job.progress_message,
            percent,
            percent,
            colour,
        )

    # --- the job page -------------------------------------------------------------------------

    @admin.display(description="now")
    def progress_message(self, job: Job) -> str:
        return job.progress_message

    @admin.display(description="retried as")
    def retries_list(self, job: Job) -> SafeString | str:
        retries = list(job.retries.order_by("created_at").values_list("pk", "status"))
        if not retries:
            return "-"
        links = [
            format_html('<a href="{}">{}</a> ({})', reverse("admin:jobs_job_change", args=[pk]), str(pk)[:8], status)
            for pk, status in retries
        ]
        return format_html("{}", SafeString(", ".join(links)))

    @admin.display(description="details")
    def error_summary(self, job: Job) -> str:
        details = job.error_details or {}
        parts = [f"{key}: {details[key]}" for key in ("node_type", "node_id", "exception_type") if details.get(key)]
        return " · ".join(parts) or "-"

    @admin.display(description="traceback")
    def error_traceback(self, job: Job) -> SafeString | str:
        text = _traceback_text((job.error_details or {}).get("traceback"))
        return format_html('<pre class="traceback">{}</pre>', text) if text else "-"

    @admin.display(description="workflow (ComfyUI API format)")
    def workflow_pretty(self, job: Job) -> SafeString:
        return format_html('<pre class="traceback">{}</pre>', json.dumps(job.workflow, indent=2, sort_keys=True))

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        job = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if job is not None:
            extra.update(job_story(job))
            extra.update(show_save=False, show_save_and_continue=False, show_save_and_add_another=False)
        return super().change_view(request, object_id, form_url, extra)

    # --- actions ------------------------------------------------------------------------------

    def get_urls(self) -> list[Any]:
        own = [
            path("<uuid:object_id>/cancel/", self.admin_site.admin_view(self.cancel_view), name="jobs_job_cancel"),
            path("<uuid:object_id>/retry/", self.admin_site.admin_view(self.retry_view), name="jobs_job_retry"),
            path(
                "<uuid:object_id>/outputs/<int:output_id>/thumbnail/",
                self.admin_site.admin_view(self.output_thumbnail_view),
                name="jobs_job_output_thumbnail",
            ),
        ]
        return own + super().get_urls()

    def _guard(self, request: HttpRequest) -> None:
        if not self.has_change_permission(request):
            raise PermissionDenied

    def cancel_view(self, request: HttpRequest, object_id: uuid.UUID) -> HttpResponse:
        return require_POST(self._cancel_one)(request, object_id)

    def retry_view(self, request: HttpRequest, object_id: uuid.UUID) -> HttpResponse:
        return require_POST(self._retry_one)(request, object_id)

    def _cancel_one(self, request: HttpRequest, object_id: uuid.UUID) -> HttpResponse:
        self._guard(request)
        job = get_object_or_404(Job, pk=object_id)
        if job.status in FINAL_STATUSES:
            self.message_user(request, f"Job is already {job.status}; nothing to cancel.", messages.WARNING)
        else:
            job = services.job_cancel(job)
            done = "cancelled" if job.status == JobStatus.CANCELLED else "cancel requested (its tracker stops it)"
            self.message_user(request, f"Job {str(job.id)[:8]}: {done}.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:jobs_job_change", args=[job.pk]))

    def _retry_one(self, request: HttpRequest, object_id: uuid.UUID) -> HttpResponse:
        self._guard(request)
        job = get_object_or_404(Job, pk=object_id)
        new_job, text = job_retry_or_explain(job)
        self.message_user(request, text, messages.SUCCESS if new_job else messages.WARNING)
        target = new_job or job
        return HttpResponseRedirect(reverse("admin:jobs_job_change", args=[target.pk]))

    @admin.action(description="Cancel selected jobs", permissions=["change"])
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        count = 0
        for job in queryset.exclude(status__in=FINAL_STATUSES):
            services.job_cancel(job)
            count += 1
        self.message_user(request, f"cancel requested for {count} job(s)", messages.SUCCESS)

    @admin.action(description="Retry selected failed or cancelled jobs", permissions=["change"])
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        for job in queryset:
            new_job, text = job_retry_or_explain(job)
            self.message_user(request, text, messages.SUCCESS if new_job else messages.WARNING)
