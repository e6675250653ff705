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

import uuid
from typing import Any

import django_filters
from django.db.models import Q, QuerySet

from jobs.models import Job, JobGroup, JobTag

FEW_JOBS = 1_000


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


class JobFilter(django_filters.FilterSet):
    project = django_filters.CharFilter()
    shot = django_filters.CharFilter()
    tag = django_filters.CharFilter(method="filter_tag", help_text="jobs carrying this tag")
    template = django_filters.CharFilter(field_name="template_name", help_text="the workflow template's name")
    template_version = django_filters.NumberFilter()
    group = django_filters.UUIDFilter(field_name="group_id")
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
