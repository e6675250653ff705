"""Periodic sweeps (celery beat): the database row is the truth about a job, not the broker message.

- orphaned: an active job whose tracker stopped beating (its worker died). If ComfyUI still has the
  prompt, a new tracking task resumes it; if not, the attempt failed `lost` (or `worker_lost` when it
  never reached ComfyUI) and is retried.
- stuck / timed out: a running job with no progress for too long, or running past the maximum, is
  interrupted in ComfyUI and failed (and retried when the category allows). The tracker checks the
  same while it lives; the sweep is the backstop.
- waiting: a job waiting too long is flagged; idle backends are woken while jobs wait (a wake lost
  with Redis, or a backend back in service). A second wake is harmless.
- blocked: a pipeline job whose upstream jobs have all ended is released or failed
  (`dependency_failed`). Their final transitions do it at once; the sweep is the safety net, so
  that no job waits forever for an upstream that ended while its own transaction was open.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.utils import timezone

from comfyui import ComfyUIError
from fleet.backends import backend_client, gpu_queue
from jobs import dependencies, dispatch, eta, services
from jobs.eta import NodeEstimate
from jobs.failures import Failure, lost_failure, stuck_or_timed_out
from jobs.models import ACTIVE_STATUSES, EventKind, Job, JobStatus
from jobs.prompt_location import prompt_locate
from jobs.wake import backends_wake

logger = logging.getLogger(__name__)


def sweep_orphaned_jobs() -> int:
    """Active jobs whose tracker is gone: resume them, or fail them as lost."""
    stale = timezone.now() - timedelta(seconds=settings.TRACKER_STALE_SECONDS * 2)
    handled = 0
    for job in Job.objects.filter(status__in=ACTIVE_STATUSES, heartbeat_at__lt=stale):
        with _ended_on_error(job):
            handled += _sweep_orphaned_job(job, stale)
    return handled


def _sweep_orphaned_job(job: Job, stale: datetime) -> int:
    client = backend_client(job.backend)
    try:
        where = prompt_locate(client, str(job.prompt_id))
    except ComfyUIError as exc:
        logger.warning("sweep: cannot ask %s about job %s: %s", job.backend, job.id, exc)
        return 0
    if where is None:
        failure = lost_failure(job)
        services.job_fail(job, failure.category, failure.message, failure.details)
    elif job.enqueued_at is None or job.enqueued_at < stale:
        # The prompt lives on: a new tracker re-attaches to it (and finishes it from history).
        services.job_event(job, EventKind.NOTE, data={"message": "tracker gone; resuming", "comfyui": where})
        services.job_enqueue(job)
    return 1


@contextmanager
def _ended_on_error(job: Job) -> Iterator[None]:
    """One job the sweep cannot handle must not stop it for the others, nor come back to break it
    on every sweep: it ends failed `internal_error`, with the error logged."""
    try:
        yield
    except Exception as exc:
        logger.exception("sweep: job %s could not be handled", job.id)
        services.job_fail_unexpected(job, exc)


def sweep_stuck_jobs() -> int:
    now = timezone.now()
    handled = 0
    for job in Job.objects.filter(status=JobStatus.RUNNING):
        with _ended_on_error(job):
            handled += _sweep_stuck_job(job, now)
    return handled


def _sweep_stuck_job(job: Job, now: datetime) -> int:
    failure = _stuck_or_timed_out(job, now)
    if failure is None:
        return 0
    try:
        backend_client(job.backend).interrupt(str(job.prompt_id))
    except ComfyUIError as exc:
        logger.warning("sweep: cannot interrupt job %s: %s", job.id, exc)
    services.job_fail(job, failure.category, failure.message, {"node_id": job.current_node_id})
    return 1


def _stuck_or_timed_out(job: Job, now: datetime) -> Failure | None:
    """The tracker's judgement (jobs.failures.stuck_or_timed_out), from what the job's row says."""
    last = job.last_progress_at or job.started_at
    return stuck_or_timed_out(
        running_seconds=(now - job.started_at).total_seconds() if job.started_at else None,
        silent_seconds=(now - last).total_seconds() if last else None,
        expected=_current_node_estimate(job),
        node_id=job.current_node_id,
        node_name=job.current_node_name or job.current_node_id or "?",
    )


def _current_node_estimate(job: Job) -> NodeEstimate | None:
    if not job.current_node_id:
        return None
    return eta.node_estimates(job.backend, job.workflow, {job.current_node_id}).get(job.current_node_id)


def sweep_blocked_jobs() -> int:
    """Blocked jobs with no upstream job left to end: settle them (jobs.services.blocked_job_settle)."""
    settled = 0
    for job in dependencies.blocked_jobs_settled()[:500]:
        with _ended_on_error(job):
            if services.blocked_job_settle(job):
                logger.warning("sweep: blocked job %s settled by the sweep, not by its upstream's end", job.id)
                settled += 1
    return settled


def sweep_waiting_jobs() -> int:
    now = timezone.now()
    flag_before = now - timedelta(seconds=settings.JOB_WAIT_FLAG_SECONDS)
    flagged = 0
    for job in Job.objects.filter(status=JobStatus.QUEUED, wait_flagged=False, created_at__lt=flag_before):
        with _ended_on_error(job):
            if Job.objects.filter(pk=job.pk, wait_flagged=False).update(wait_flagged=True):
                services.job_event(job, EventKind.NOTE, data={"message": "waiting longer than expected"})
                flagged += 1
    return flagged + requeue_lost_messages(now)


def requeue_lost_messages(now: datetime) -> int:
    """Wake the idle backends with an empty queue while jobs wait: a wake lost with Redis, or one
    held back by a backend that was busy, draining or down when the job came, costs at most one
    sweep's wait. Backends that cannot run what waits take nothing (jobs.dispatch). Returns the
    backends woken."""
    idle = [
        backend
        for backend in dispatch.backends_idle_with_work()
        if broker_queue_length(current_app, gpu_queue(backend)) == 0
    ]
    backends_wake(idle, force=True)
    return len(idle)


def broker_queue_length(app: Any, queue: str) -> int:
    """Messages waiting in a Redis-backed Celery queue, over all its priority lists."""
    steps = app.conf.broker_transport_options.get("priority_steps", [0])
    sep = app.conf.broker_transport_options.get("sep", "\x06\x16")
    with app.connection_for_read() as connection:
        client = connection.default_channel.client
        names = [queue] + [f"{queue}{sep}{step}" for step in steps if step]
        return sum(client.llen(name) for name in names)
