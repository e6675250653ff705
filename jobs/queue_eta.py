"""When a waiting job should finish: the running job's remaining time, the jobs ahead, its own run.

An estimate, from the node timings of finished jobs (jobs.eta); None when nothing is known.
The arithmetic only: jobs.selectors reads the queue and places the jobs in it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from jobs import eta
from jobs.models import Job

# Only the front of the queue is summed: a job further back waits for at least that long.
JOBS_AHEAD_LIMIT = 50


@dataclass(frozen=True)
class QueuePlace:
    """Where a waiting job stands among the jobs waiting for the same backend, and when it should finish."""

    position: int  # 1-based: priority first, then age; jobs equal in both share a place
    finish_at: datetime | None  # an estimate; None when nothing is known


def queue_finish_times(
    backend: str,
    placed: Sequence[tuple[Job, int]],
    front: Sequence[tuple[str, dict[str, Any]]],
    running_remaining: float | None,
    now: datetime,
) -> dict[uuid.UUID, datetime | None]:
    """The estimated finish of each (waiting job, position) of one backend.

    `front` is (job id, workflow) of the backend's first waiting jobs in queue order, at least as many
    as are ahead of any placed job (up to JOBS_AHEAD_LIMIT): the waits are summed along it once, not
    once per job. `running_remaining` is as in `eta.queue_eta_seconds`.
    """
    ahead = min(max((position for _, position in placed), default=1) - 1, JOBS_AHEAD_LIMIT)
    waits = eta.queue_wait_seconds(backend, front[:ahead], running_remaining)
    finish_at: dict[uuid.UUID, datetime | None] = {}
    for job, position in placed:
        # At most the summed front: JOBS_AHEAD_LIMIT jobs, fewer when one left it between two reads.
        wait = waits[min(position - 1, len(waits) - 1)]
        own = None if wait is None else eta.expected_total_seconds(backend, job.workflow)
        finish_at[job.pk] = None if wait is None or own is None else now + timedelta(seconds=wait + own)
    return finish_at
