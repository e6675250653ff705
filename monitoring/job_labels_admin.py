"""The job history's labels in the admin: name, project, shot, tags, template and group, as columns,
filters and search, without slowing the list down at a million jobs.

A filter's choices never come from a SELECT DISTINCT over the job table: they are the values of the
latest RECENT_ROWS jobs (an index walk newest first, ~ms), plus the value chosen; every filter hits an
index (jobs.models.Job.Meta.indexes, JobTag's own). Any other value is reached by searching for it.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from jobs.filters import tag_q
from jobs.models import Job, JobTag
from workflow_templates.models import WorkflowTemplate

RECENT_ROWS = 2_000
MAX_CHOICES = 50


def _choices(values: Iterable[str], chosen: str | None) -> list[tuple[str, str]]:
    names = sorted({value for value in values if value} | ({chosen} if chosen else set()))[:MAX_CHOICES]
    return [(name, name) for name in names]


def _recent(jobs: QuerySet[Job], field: str) -> list[str]:
    return list(jobs.order_by("-created_at").values_list(field, flat=True)[:RECENT_ROWS])


class ProjectFilter(admin.SimpleListFilter):
    title = "project"
    parameter_name = "project"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return _choices(_recent(Job.objects.all(), "project"), self.value())

    def queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> QuerySet[Job]:
        return queryset.filter(project=self.value()) if self.value() else queryset


class ShotFilter(admin.SimpleListFilter):
    """The shots of the chosen project (or of any project when none is chosen)."""

    title = "shot"
    parameter_name = "shot"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        project = request.GET.get(ProjectFilter.parameter_name)
        jobs = Job.objects.filter(project=project) if project else Job.objects.all()
        return _choices(_recent(jobs, "shot"), self.value())

    def queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> QuerySet[Job]:
        return queryset.filter(shot=self.value()) if self.value() else queryset


class TagFilter(admin.SimpleListFilter):
    title = "tag"
    parameter_name = "tag"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        recent = JobTag.objects.order_by("-pk").values_list("tag", flat=True)[:RECENT_ROWS]
        return _choices(recent, self.value())

    def queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> QuerySet[Job]:
        tag = self.value()
        return queryset.filter(tag_q(tag)) if tag else queryset


class TemplateFilter(admin.SimpleListFilter):
    title = "workflow template"
    parameter_name = "template"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return _choices(WorkflowTemplate.objects.values_list("name", flat=True)[:MAX_CHOICES], self.value())

    def queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> QuerySet[Job]:
        return queryset.filter(template_name=self.value()) if self.value() else queryset


LABEL_FILTERS = [ProjectFilter, ShotFilter, TagFilter, TemplateFilter]
LABEL_COLUMNS = ["job_name", "project_shot", "template_label", "group_link"]
LABEL_FIELDS = ["name", "project", "shot", "tags", "template_label", "group_link"]


class JobLabelsColumns:
    """The JobAdmin's label columns and fields (plain values of the row: no query per row)."""

    @admin.display(description="name")
    def job_name(self, job: Job) -> str:
        return job.name or "-"

    @admin.display(description="project / shot")
    def project_shot(self, job: Job) -> str:
        return " / ".join(part for part in (job.project, job.shot) if part) or "-"

    @admin.display(description="template")
    def template_label(self, job: Job) -> str:
        return f"{job.template_name} v{job.template_version}" if job.template_name else "-"

    @admin.display(description="group")
    def group_link(self, job: Job) -> str:
        if job.group_id is None:
            return "-"
        url = reverse("admin:jobs_jobgroup_change", args=[job.group_id])
        return format_html('<a href="{}">{}</a>', url, str(job.group_id)[:8])
