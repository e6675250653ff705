"""Fair share within a priority: the GPUs go round the users (or the jobs' projects, FAIR_SHARE_BY).

Each waiting job gets a turn when it starts waiting: one after its owner's last waiting turn at its
priority, but never before the front of that priority's queue. The fleet takes jobs by priority,
then turn, then age (jobs.dispatch), so a user's 500th job has turn ~500 and another user's one job
submitted meanwhile gets the front's turn: it waits for at most one job of each user ahead of it in
that turn. Stored on the row and read through the dispatch index, the order costs one aggregate at
submit and nothing per job at dispatch, whatever the queue's length.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import Max, Min, Q

from jobs.models import Job, JobStatus


def share_filter(user_id: int | None, project: str) -> Q:
    if settings.FAIR_SHARE_BY == "project":
        return Q(project=project)
    return Q(user_id=user_id) if user_id is not None else Q(user__isnull=True)


def fair_turn_next(*, user_id: int | None, project: str, priority: int, exclude_id: Any = None) -> int:
    """The turn of a job that starts waiting now (one query)."""
    waiting = Job.objects.filter(status=JobStatus.QUEUED, priority=priority)
    if exclude_id is not None:
        waiting = waiting.exclude(pk=exclude_id)
    turns = waiting.aggregate(front=Min("fair_turn"), own=Max("fair_turn", filter=share_filter(user_id, project)))
    if turns["own"] is not None:
        return max(turns["own"] + 1, turns["front"])
    return turns["front"] if turns["front"] is not None else 0
