"""Reads: pipelines as REST and the admin show them: the group's summary (jobs.group_summary), its
jobs in an order where each comes after the jobs it reads, each job's upstream keys, and the ETA
along the critical path (jobs.critical_path)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import timedelta
from graphlib import TopologicalSorter
from typing import Any

from django.db.models import QuerySet
from django.urls import reverse
from django.utils import timezone

from jobs import eta, selectors
from jobs.critical_path import critical_path
from jobs.group_summary import MemberState, counted_members
from jobs.models import ACTIVE_STATUSES, FINAL_STATUSES, GroupKind, Job, JobDependency, JobGroup

PIPELINE_JOB_FIELDS = (
    "id",
    "group_id",
    "pipeline_key",
    "name",
    "status",
    "progress",
    "failure_category",
    "error_message",
    "retry_of_id",
    "backend",
    "workflow",
    "eta_finish_at",
    "created_at",
)


def visible_pipelines(user: Any) -> QuerySet[JobGroup]:
    return selectors.visible_groups(user).filter(kind=GroupKind.PIPELINE)


def pipeline_jobs(group: JobGroup) -> tuple[list[Job], dict[uuid.UUID, list[uuid.UUID]]]:
    """The pipeline's jobs, each after the jobs it reads, and each job's upstream job ids."""
    jobs = {job.pk: job for job in Job.objects.filter(group=group).only(*PIPELINE_JOB_FIELDS)}
    upstream: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    for job_id, upstream_id in JobDependency.objects.filter(job__group=group).values_list("job_id", "upstream_id"):
        upstream[job_id].append(upstream_id)
    by_age = sorted(jobs.values(), key=lambda job: (job.created_at, str(job.pk)))
    graph = {job.pk: [u for u in upstream[job.pk] if u in jobs] for job in by_age}
    return [jobs[pk] for pk in TopologicalSorter(graph).static_order()], upstream


def remaining_seconds(job: Job, now: Any) -> float | None:
    """What a job still needs to run, as far as anyone knows (jobs.critical_path)."""
    if job.status in FINAL_STATUSES:
        return 0.0
    if job.status in ACTIVE_STATUSES:
        return max((job.eta_finish_at - now).total_seconds(), 0.0) if job.eta_finish_at else None
    return eta.expected_total_seconds(job.estimate_backend, job.workflow)


def pipeline_eta(jobs: Sequence[Job], upstream: dict[uuid.UUID, list[uuid.UUID]]) -> dict[str, Any] | None:
    now = timezone.now()
    counted = {m.id for m in counted_members([MemberState(j.pk, j.status, j.progress, j.retry_of_id) for j in jobs])}
    remaining = {job.pk: remaining_seconds(job, now) for job in jobs if job.pk in counted}
    path = critical_path(remaining, upstream)
    if path is None:
        return None
    return {
        "estimate": True,
        "finish_at": (now + timedelta(seconds=path.seconds)).isoformat(),
        "remaining_seconds": round(path.seconds, 1),
        "unknown_jobs": path.unknown_jobs,
        "basis": "node timings along the critical path; time waiting in queues not counted",
    }


def pipeline_job_rows(jobs: Sequence[Job], upstream: dict[uuid.UUID, list[uuid.UUID]]) -> list[dict[str, Any]]:
    keys = {job.pk: job.pipeline_key for job in jobs}
    return [
        {
            "key": job.pipeline_key,
            "id": str(job.pk),
            "name": job.name,
            "status": job.status,
            "progress_percent": round(job.progress * 100, 1),
            "failure_category": job.failure_category,
            "error_message": job.error_message[:500],
            "upstream": [keys.get(u) or str(u) for u in upstream.get(job.pk, [])],
            "retry_of": str(job.retry_of_id) if job.retry_of_id else None,
            "url": reverse("job-detail", kwargs={"pk": job.pk}),
        }
        for job in jobs
    ]


def pipeline_states(groups: Sequence[JobGroup], *, with_jobs: bool = False) -> list[dict[str, Any]]:
    """Pipelines as REST shows them: the group's summary; with_jobs adds the jobs and the ETA."""
    states = selectors.group_states(groups)
    for group, state in zip(groups, states, strict=True):
        state["url"] = reverse("pipeline-detail", kwargs={"pk": group.pk})
        if with_jobs:
            jobs, upstream = pipeline_jobs(group)
            state["jobs"] = pipeline_job_rows(jobs, upstream)
            state["eta"] = pipeline_eta(jobs, upstream)
    return states


def pipeline_state(group: JobGroup) -> dict[str, Any]:
    return pipeline_states([group], with_jobs=True)[0]
