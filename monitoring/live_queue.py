"""What the live queue page starts from: every waiting and running job, in the websocket's own shape."""

from __future__ import annotations

from typing import Any

from jobs.models import ACTIVE_STATUSES, WAITING_STATUSES, Job
from jobs.selectors import job_states

# As many as the websocket snapshot sends (jobs.consumers.SNAPSHOT_LIMIT is 200); more would not fit a page.
LIVE_QUEUE_LIMIT = 200


def live_queue_jobs(limit: int = LIVE_QUEUE_LIMIT) -> list[dict[str, Any]]:
    # Served by job_queue_idx (status first): never a scan of the finished millions.
    jobs = (
        Job.objects.select_related("user")
        .filter(status__in=[*WAITING_STATUSES, *ACTIVE_STATUSES])
        .order_by("-created_at")[:limit]
    )
    return job_states(list(jobs))
