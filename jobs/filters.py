"""Query filters of the job and group lists: `?project=&shot=&tag=&template=&group=&search=`.

Each is served by an index (jobs.models) that walks newest first where the filter is an equality on
the job's own columns (project, shot, template). A tag and a search are not: for them the jobs they
name are read first through their own indexes (JobTag's, the name's pattern index that Django adds on
PostgreSQL, project's, shot's), and when they are few (FEW_JOBS) the list is those ids. Measured on
PostgreSQL with 500,000 jobs: a tag on 5 jobs took 1 s as a subquery (the planner walked every job
newest first, expecting to meet them early) and under 5 ms as ids. A term that names more jobs than
that is common, and walking newest first meets its jobs early.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from drf_spectacular.utils import extend_schema_field

from jobs.models import Job, JobGroup, JobTag

FEW_JOBS = 1_000
CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


def few_job_ids(*queries: QuerySet[Any, uuid.UUID]) -> list[uuid.UUID] | None:
    """The job ids the queries name together, when they are at most FEW_JOBS; None otherwise."""
    ids: set[uuid.UUID] = set()
    for query in queries:
        ids.update(query[: FEW_JOBS + 1])
        if len(ids) > FEW_JOBS:
            return None
    return list(ids)


def tag_q(tag: str) -> Q:
    tagged = JobTag.objects.filter(tag=tag).values_list("job_id", flat=True)
    ids = few_job_ids(tagged)
    return Q(pk__in=tagged if ids is None else ids)


def search_q(term: str) -> Q:
    """A job whose name starts with the term, or of exactly that project, shot or tag."""
    arms = Q(name__startswith=term), Q(project=term), Q(shot=term)
    tagged = JobTag.objects.filter(tag=term).values_list("job_id", flat=True)
    ids = few_job_ids(*(Job.objects.filter(arm).values_list("pk", flat=True) for arm in arms), tagged)
    if ids is not None:
        return Q(pk__in=ids)
    return arms[0] | arms[1] | arms[2] | Q(pk__in=tagged)


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": 2**31 - 1})
class VersionNumberFilter(django_filters.NumberFilter):
    """A whole number the column can hold: `?template_version=1.5` or one past 2**31 - 1 is a 400
    (a NumberFilter takes any decimal, which matches nothing, and PostgreSQL refuses a too large one)."""

    field_class = forms.IntegerField

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(min_value=1, max_value=2**31 - 1, **kwargs)


class CanonicalUUIDField(forms.UUIDField):
    """Only the written form of a UUID (`8-4-4-4-12` hex digits), as the schema's `format: uuid` says;
    Django's own also takes 32 bare digits, braces and `urn:uuid:`."""

    def to_python(self, value: Any) -> Any:
        if value not in self.empty_values and not CANONICAL_UUID.fullmatch(str(value)):
            raise ValidationError(self.error_messages["invalid"], code="invalid")
        return super().to_python(value)


class CanonicalUUIDFilter(django_filters.UUIDFilter):
    field_class = CanonicalUUIDField


class JobFilter(django_filters.FilterSet):
    project = django_filters.CharFilter()
    shot = django_filters.CharFilter()
    tag = django_filters.CharFilter(method="filter_tag", help_text="jobs carrying this tag")
    template = django_filters.CharFilter(field_name="template_name", help_text="the workflow template's name")
    template_version = VersionNumberFilter()
    group = CanonicalUUIDFilter(field_name="group_id")
    search = django_filters.CharFilter(
        method="filter_search", help_text="a name starting with it, or exactly this project, shot or tag"
    )

    class Meta:
        model = Job
        fields = ["status", "job_type", "backend", "failure_category"]

    def filter_tag(self, queryset: QuerySet[Job], name: str, value: str) -> QuerySet[Job]:
        return queryset.filter(tag_q(value))

    def filter_search(self, queryset: QuerySet[Job], name: str, value: str) -> QuerySet[Job]:
        term = value.strip()
        return queryset.filter(search_q(term)) if term else queryset


class JobGroupFilter(django_filters.FilterSet):
    project = django_filters.CharFilter()
    shot = django_filters.CharFilter()
    tag = django_filters.CharFilter(method="filter_tag", help_text="groups with a job carrying this tag")
    search = django_filters.CharFilter(
        method="filter_search", help_text="a name starting with it, or exactly this project, shot or tag"
    )

    class Meta:
        model = JobGroup
        fields: list[str] = []

    def filter_tag(self, queryset: QuerySet[JobGroup], name: str, value: str) -> QuerySet[JobGroup]:
        return queryset.filter(pk__in=_tagged_groups(value))

    def filter_search(self, queryset: QuerySet[JobGroup], name: str, value: str) -> QuerySet[JobGroup]:
        term = value.strip()
        if not term:
            return queryset
        return queryset.filter(
            Q(name__startswith=term) | Q(project=term) | Q(shot=term) | Q(pk__in=_tagged_groups(term))
        )


def _tagged_groups(tag: str) -> QuerySet[JobTag, Any]:
    return JobTag.objects.filter(tag=tag, job__group__isnull=False).values("job__group_id")
