"""Fair share within a priority: the GPUs go round the users (or the jobs' projects, FAIR_SHARE_BY).

Each waiting job gets a turn when it starts waiting: one after its owner's last waiting turn at its
priority, but never before the front of that priority's queue. The fleet takes jobs by priority,
then turn, then age (jobs.dispatch), so a user's 500th job has turn ~500 and another user's one job
submitted meanwhile gets the front's turn: it waits for at most one job of each user ahead of it in
that turn. Stored on the row and read through the dispatch index, the order costs two index reads at
submit and nothing per job at dispatch, whatever the queue's length.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import Q

from jobs.models import Job, JobStatus


def share_filter(user_id: int | None, project: str) -> Q:
    if settings.FAIR_SHARE_BY == "project":
        return Q(project=project)
    return Q(user_id=user_id) if user_id is not None else Q(user__isnull=True)


def fair_turn_next(*, user_id: int | None, project: str, priority: int, exclude_id: Any = None) -> int:
    """The turn of a job that starts waiting now (two queries, each an index's first entry: the
    front through the dispatch index, the owner's last through the waiting-turn index of the share;
    one aggregate over both read every waiting job of the priority, 5 ms at 10,000)."""
    waiting = Job.objects.filter(status=JobStatus.QUEUED, priority=priority)
    if exclude_id is not None:
        waiting = waiting.exclude(pk=exclude_id)
    # First entries, not MIN/MAX aggregates: with statistics that lag a burst, PostgreSQL aggregated
    # every waiting row of the priority instead (docs/HAZARDS.md).
    front = waiting.order_by("fair_turn").values_list("fair_turn", flat=True).first()
    if front is None:
        return 0
    owners = waiting.filter(share_filter(user_id, project))
    own = owners.order_by("-fair_turn").values_list("fair_turn", flat=True).first()
    return front if own is None else max(own + 1, front)
