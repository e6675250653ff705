"""Where a waiting job stands in the fleet's queue and when it should finish (an estimate).

jobs.queue_announcements sums the waits along the queue's front; jobs.selectors places the jobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# Only the front of the queue is summed: a job further back waits for at least that long.
JOBS_AHEAD_LIMIT = 50


@dataclass(frozen=True)
class QueuePlace:
    """Where a waiting job stands in the fleet's queue, and when it should finish."""

    position: int  # 1-based: priority, fair-share turn, age
    finish_at: datetime | None  # an estimate; None when nothing is known
