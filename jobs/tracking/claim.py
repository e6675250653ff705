"""Before following a job: wait for its time, claim it, and name the tracker to ComfyUI."""

from __future__ import annotations

import socket
import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from fleet.backends import backend_is_draining
from jobs import services
from jobs.dispatch import tracker_client_id
from jobs.models import Job, JobStatus

DRAINING_RECHECK_SECONDS = 30.0

__all__ = ["claim_when_free", "heartbeat_seconds", "must_wait", "tracker_client_id"]


def heartbeat_seconds() -> float:
    # Several beats fit in the stale window, so a quiet but live tracker never looks dead.
    return min(5.0, settings.TRACKER_STALE_SECONDS / 4)


def must_wait(job: Job) -> bool:
    """A retry before its backoff, or a job for a draining backend: put it back for later
    (only a job delivered by id waits here: jobs.dispatch never takes one that must wait)."""
    delay = 0.0
    if job.not_before and job.not_before > timezone.now():
        delay = (job.not_before - timezone.now()).total_seconds()
    elif backend_is_draining(job.backend):
        delay = DRAINING_RECHECK_SECONDS
    if delay:
        services.job_enqueue(job, countdown=delay)
    return bool(delay)


def claim_when_free(job: Job, client_id: str) -> bool:
    """Claim the job, waiting out a previous tracker whose heartbeat may still look fresh."""
    worker = socket.gethostname()
    stale_after = timedelta(seconds=settings.TRACKER_STALE_SECONDS)
    deadline = time.monotonic() + settings.TRACKER_STALE_SECONDS + heartbeat_seconds()
    last_beat = job.heartbeat_at
    while True:
        if services.job_claim(job, client_id=client_id, worker=worker, stale_after=stale_after):
            return True
        if job.status not in (JobStatus.SUBMITTED, JobStatus.RUNNING):
            return False
        if job.heartbeat_at != last_beat or time.monotonic() > deadline:
            return False  # someone else is beating: a live tracker follows this job
        time.sleep(1.0)
