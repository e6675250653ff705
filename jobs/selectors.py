"""Reads: the jobs a user may see, where waiting jobs stand in their backend's queue, and jobs in
the one shape that REST and websockets show.

A backend's queue is read once for all the jobs shown together, never once per job: its waiting
list in one query, positions by enumeration, ETAs summed along it (jobs.queue_eta).
"""

from __future__ import annotations

import uuid
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from jobs.group_summary import MemberState, group_summary
from jobs.models import ACTIVE_STATUSES, Job, JobGroup, JobStatus
from jobs.queue_eta import JOBS_AHEAD_LIMIT, QueuePlace, queue_finish_times
from jobs.serializers import JobGroupDetailSerializer, JobGroupSerializer, JobSerializer

# Orders a backend's waiting jobs: the smaller key goes first (priority first, then age).
QueueKey = tuple[int, datetime]


# The admin's model permissions, applied to REST and websockets alike. As in the admin, a user who
# may change jobs may also see them.
VIEW_JOBS = "jobs.view_job"
CHANGE_JOBS = "jobs.change_job"


def may_see_others_jobs(user: Any) -> bool:
    """Staff who hold the permission to view (or change) jobs, as the admin decides."""
    return _staff(user) and (user.has_perm(VIEW_JOBS) or user.has_perm(CHANGE_JOBS))


def may_change_others_jobs(user: Any) -> bool:
    """Staff who hold the permission to change jobs: cancel and retry other users' jobs."""
    return _staff(user) and user.has_perm(CHANGE_JOBS)


def may_change_job(user: Any, job: Job) -> bool:
    """Everyone acts on their own jobs; other users' jobs need the permission to change jobs."""
    return (job.user_id is not None and job.user_id == user.pk) or may_change_others_jobs(user)


def _staff(user: Any) -> bool:
    return bool(user.is_authenticated and user.is_active and user.is_staff)


def visible_jobs(user: Any) -> QuerySet[Job]:
    """A user's own jobs; every job for staff who may see them."""
    jobs = Job.objects.select_related("user")
    if not user.is_authenticated:
        return jobs.none()
    return jobs if may_see_others_jobs(user) else jobs.filter(user=user)


def job_manual_retry(job: Job) -> Job | None:
    """The job made by retrying `job` by hand, if there is one (there is at most one)."""
    return Job.objects.filter(retry_of=job).first()


def waiting_jobs(backend: str) -> QuerySet[Job]:
    """The jobs waiting for a backend, in queue order; the jobs ahead of one are a prefix of it."""
    return Job.objects.filter(backend=backend, status=JobStatus.QUEUED).order_by("-priority", "created_at")


def queue_key(priority: int, created_at: datetime) -> QueueKey:
    return (-priority, created_at)


def queue_positions(order: Sequence[QueueKey], jobs: Iterable[Job]) -> list[tuple[Job, int]]:
    """Each job's 1-based place in a backend's sorted waiting list: one more than the jobs strictly
    ahead of it, so jobs of equal priority and age share a place."""
    return [(job, bisect_left(order, queue_key(job.priority, job.created_at)) + 1) for job in jobs]


def running_remaining_seconds(backend: str, now: datetime) -> float | None:
    """What the backend's running job still needs: 0.0 when it runs nothing, None when nobody knows."""
    active = Job.objects.filter(backend=backend, status__in=ACTIVE_STATUSES).values_list("eta_finish_at", flat=True)
    if not active:
        return 0.0
    finish_at = active[0]
    return max((finish_at - now).total_seconds(), 0.0) if finish_at else None


def queue_places(jobs: Iterable[Job]) -> dict[uuid.UUID, QueuePlace]:
    """Where each waiting job among `jobs` stands, whatever part of the queue they come from.

    Per backend: its waiting list's order, the workflows of its front, the running job's estimate.
    """
    waiting: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        if job.status == JobStatus.QUEUED:
            waiting[job.backend].append(job)
    now = timezone.now()
    places: dict[uuid.UUID, QueuePlace] = {}
    for backend, queued in waiting.items():
        order = sorted(queue_key(*row) for row in waiting_jobs(backend).values_list("priority", "created_at"))
        placed = queue_positions(order, queued)
        ahead = min(max(position for _, position in placed) - 1, JOBS_AHEAD_LIMIT)
        front = [(str(pk), workflow) for pk, workflow in waiting_jobs(backend).values_list("id", "workflow")[:ahead]]
        places.update(_places(backend, placed, front, now))
    return places


def _places(
    backend: str, placed: list[tuple[Job, int]], front: list[tuple[str, dict[str, Any]]], now: datetime
) -> dict[uuid.UUID, QueuePlace]:
    finish_at = queue_finish_times(backend, placed, front, running_remaining_seconds(backend, now), now)
    return {job.pk: QueuePlace(position, finish_at[job.pk]) for job, position in placed}


def job_states(jobs: Sequence[Job], places: Mapping[uuid.UUID, QueuePlace] | None = None) -> list[dict[str, Any]]:
    """Jobs as REST and websockets show them; `places` when the caller has already read the queue."""
    places = queue_places(jobs) if places is None else places
    return list(JobSerializer(jobs, many=True, context={"queue_places": places}).data)


def job_state(job: Job) -> dict[str, Any]:
    return job_states([job])[0]


# --- groups of jobs ----------------------------------------------------------------------------

# What a group's summary and its list of jobs read of each job.
MEMBER_FIELDS = (
    "id",
    "group_id",
    "name",
    "shot",
    "tags",
    "status",
    "progress",
    "failure_category",
    "retry_of_id",
    "template_name",
    "template_version",
    "created_at",
)


def visible_groups(user: Any) -> QuerySet[JobGroup]:
    """A user's own groups; every group for staff who may see other users' jobs."""
    groups = JobGroup.objects.select_related("user")
    if not user.is_authenticated:
        return groups.none()
    return groups if may_see_others_jobs(user) else groups.filter(user=user)


def may_change_group(user: Any, group: JobGroup) -> bool:
    """Cancel a group: its owner, or staff who may change other users' jobs."""
    return (group.user_id is not None and group.user_id == user.pk) or may_change_others_jobs(user)


def group_states(groups: Sequence[JobGroup], *, with_jobs: bool = False) -> list[dict[str, Any]]:
    """Groups as REST shows them: their jobs read in one query for all of them, summed up here."""
    members: dict[uuid.UUID, list[Job]] = defaultdict(list)
    jobs = Job.objects.filter(group__in=[group.pk for group in groups]).only(*MEMBER_FIELDS)
    for job in jobs.order_by("created_at", "id"):
        members[job.group_id].append(job)  # type: ignore[index]  # filtered on a group
    summaries = {
        group.pk: group_summary(
            [MemberState(job.pk, job.status, job.progress, job.retry_of_id) for job in members[group.pk]]
        )
        for group in groups
    }
    templates = {
        pk: {"name": rows[0].template_name, "version": rows[0].template_version}
        for pk, rows in members.items()
        if rows and rows[0].template_name
    }
    context = {"summaries": summaries, "templates": templates, "members": members}
    serializer = JobGroupDetailSerializer if with_jobs else JobGroupSerializer
    return list(serializer(groups, many=True, context=context).data)


def group_state(group: JobGroup) -> dict[str, Any]:
    return group_states([group], with_jobs=True)[0]
