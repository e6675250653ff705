"""What a tracker stopped by an exception leaves behind."""

from __future__ import annotations

import logging
from collections.abc import Callable

from comfyui import ComfyUIClient
from jobs import services
from jobs.models import Job
from jobs.tracking.database_outage import DATABASE_DOWN
from jobs.tracking.ending import TrackingEnded, prompt_abandon

logger = logging.getLogger(__name__)


def tracking_stopped(job: Job, exc: Exception, client: ComfyUIClient | None, *, ours: Callable[[], bool]) -> None:
    """The job as it is when it ended or the database is gone; otherwise failed `internal_error`
    (with its prompt abandoned) if it is this tracker's to fail."""
    if isinstance(exc, TrackingEnded):
        return
    if isinstance(exc, DATABASE_DOWN):
        # The database went away outside the follow loop (which rides an outage out): nothing can be
        # written, and the prompt may be running. Both are left as they are for the orphan sweep.
        logger.warning("job %s: the database is unavailable (%s); left to the orphan sweep", job.id, exc)
        return
    logger.error("job %s: the tracker stopped on an unexpected error", job.id, exc_info=exc)
    if ours():
        if client is not None:
            prompt_abandon(client, str(job.prompt_id))
        services.job_fail_unexpected(job, exc)
