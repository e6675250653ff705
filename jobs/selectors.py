"""Reads: the jobs a user may see, where waiting jobs stand in the fleet's queue, and jobs in
the one shape that REST and websockets show.

The queue is read once for all the jobs shown together, never once per job: its waiting list in
one query, positions by enumeration, ETAs summed along its front (jobs.queue_announcements).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from jobs.group_summary import MemberState, group_summary
from jobs.live_state import job_payloads
from jobs.models import ACTIVE_STATUSES, Job, JobGroup, JobStatus
from jobs.queue_announcements import fleet_waits, own_seconds
from jobs.queue_eta import JOBS_AHEAD_LIMIT, QueuePlace
from jobs.queue_order import index_order_kept, waiting_in_order
from jobs.serializers import JobGroupDetailSerializer, JobGroupSerializer

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


def running_remaining_seconds(backend: str, now: datetime) -> float | None:
    """What the backend's running job still needs: 0.0 when it runs nothing, None when nobody knows."""
    active = Job.objects.filter(backend=backend, status__in=ACTIVE_STATUSES).values_list("eta_finish_at", flat=True)
    if not active:
        return 0.0
    finish_at = active[0]
    return max((finish_at - now).total_seconds(), 0.0) if finish_at else None


FEW_JOBS = 1  # one waiting job shown alone: its place is counted (the same one query as reading the ids)


def queue_position(job: Job) -> int | None:
    """The job's 1-based place in the fleet's order, counted (one query); None when it no longer waits."""
    ahead = (
        Q(priority__gt=job.priority)
        | Q(priority=job.priority, fair_turn__lt=job.fair_turn)
        | Q(priority=job.priority, fair_turn=job.fair_turn, created_at__lt=job.created_at)
        | Q(priority=job.priority, fair_turn=job.fair_turn, created_at=job.created_at, pk__lt=job.pk)
    )
    counts = Job.objects.filter(status=JobStatus.QUEUED).aggregate(
        ahead=Count("pk", filter=ahead), me=Count("pk", filter=Q(pk=job.pk))
    )
    return counts["ahead"] + 1 if counts["me"] else None


def queue_places(jobs: Iterable[Job]) -> dict[uuid.UUID, QueuePlace]:
    """Where each waiting job among `jobs` stands in the fleet's queue, read once for all of them:
    the waiting ids in order, the front's workflows, the running jobs' estimates (as the queue's
    announcements read them, jobs.queue_announcements)."""
    queued = [job for job in jobs if job.status == JobStatus.QUEUED]
    if not queued:
        return {}
    now = timezone.now()
    if len(queued) <= FEW_JOBS:
        # One job shown (a submit's answer, a job's page): count the jobs ahead through the dispatch
        # index instead of reading every waiting id (10,000 at a long queue). A count keeps no order:
        # the front is read in order only when some job is ahead (a submit at the front reads none).
        placed = [(job, position) for job in queued if (position := queue_position(job)) is not None]
        front = []
        if (ahead := _ahead(placed)) > 0:
            with index_order_kept():
                front = _front_read(ahead)
    else:
        with index_order_kept():  # one transaction for the places and the front
            ids = list(waiting_in_order().values_list("id", flat=True))
            order = {pk: place for place, pk in enumerate(ids, start=1)}
            placed = [(job, order[job.pk]) for job in queued if job.pk in order]
            front = _front_read(_ahead(placed))
    if not placed:
        return {}
    waits = fleet_waits(front, now)
    places: dict[uuid.UUID, QueuePlace] = {}
    for job, position in placed:
        wait = waits[min(position - 1, len(waits) - 1)]
        own = None if wait is None else own_seconds(job)
        finish_at = None if wait is None or own is None else now + timedelta(seconds=wait + own)
        places[job.pk] = QueuePlace(position, finish_at)
    return places


def _ahead(placed: list[tuple[Job, int]]) -> int:
    """How many waiting jobs are ahead of the last of `placed` (JOBS_AHEAD_LIMIT at most)."""
    return min(max((position for _, position in placed), default=1) - 1, JOBS_AHEAD_LIMIT)


def _front_read(ahead: int) -> list[tuple[str, Any]]:
    """The first `ahead` waiting jobs with their workflows, in order (inside index_order_kept)."""
    return [(str(pk), workflow) for pk, workflow in waiting_in_order().values_list("id", "workflow")[:ahead]]


def job_states(jobs: Sequence[Job], places: Mapping[uuid.UUID, QueuePlace] | None = None) -> list[dict[str, Any]]:
    """Jobs as REST and websockets show them; `places` when the caller has already read the queue."""
    return job_payloads(jobs, queue_places(jobs) if places is None else places)


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
