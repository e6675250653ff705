"""The database gone for a few seconds while a job runs (a PostgreSQL restart, a failover): the
tracker keeps following ComfyUI, holds what it would have written, and writes it when the database
is back; the job's final state, outputs and events come out as if nothing had happened.

Only for as long as no sweep can take the job for an orphan: the heartbeat goes stale after
TRACKER_STALE_SECONDS, and a second tracker must never follow the same prompt. Past that the tracker
stops without touching the job or its prompt (it could not write anyway), and the orphan sweep hands
the job to a fresh tracker once the database is back, which re-attaches to the prompt in ComfyUI.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

from jobs.models import EventKind, Job, JobEvent
from jobs.tracking.claim import heartbeat_seconds
from jobs.tracking.ending import JobEnding, TrackingEnded
from jobs.tracking.timeline import Timeline

logger = logging.getLogger(__name__)

DATABASE_DOWN = (OperationalError, InterfaceError)
RETRY_FIRST_SECONDS = 0.25
RETRY_MAX_SECONDS = 2.0


def ride_seconds() -> float:
    """How long a tracker rides out an outage in place: two heartbeats short of looking dead."""
    return max(settings.TRACKER_STALE_SECONDS - 2 * heartbeat_seconds(), heartbeat_seconds())


class DatabaseOutage:
    def __init__(self, job: Job) -> None:
        self.job = job
        self.since: float | None = None
        self.retry_at = 0.0
        self.delay = RETRY_FIRST_SECONDS
        self.failures = 0

    def retry_due(self) -> bool:
        """Whether the tracker may touch the database now (always, unless it is down and the next
        try is not due yet)."""
        return self.since is None or time.monotonic() >= self.retry_at

    def receive_timeout(self, coalescer_wait: float) -> float:
        """How long to wait for ComfyUI: while the database is down, until the next try (pending
        changes cannot be written before it, and waiting less would only spin)."""
        if self.since is None:
            return coalescer_wait
        return max(self.retry_at - time.monotonic(), coalescer_wait)

    def failed(self, exc: Exception) -> None:
        """A write or read failed on the database: close the broken connection (the next query
        connects afresh) and try again later, with backoff; stop once the outage outlasts ride_seconds."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
            self.delay = RETRY_FIRST_SECONDS
            logger.warning("job %s: the database is unavailable (%s); holding writes", self.job.id, exc)
        self.failures += 1
        try:
            connection.close()
        except DATABASE_DOWN:
            pass
        if now - self.since > ride_seconds():
            logger.warning(
                "job %s: the database stayed down for %.1f s; this tracker stops and leaves the job and its "
                "prompt to the orphan sweep",
                self.job.id,
                now - self.since,
            )
            raise TrackingEnded from exc
        self.retry_at = now + self.delay
        self.delay = min(self.delay * 2, RETRY_MAX_SECONDS)

    def over(self) -> None:
        if self.since is not None:
            logger.info(
                "job %s: the database is back after %.1f s (%d failed tries); held writes stored",
                self.job.id,
                time.monotonic() - self.since,
                self.failures,
            )
            self.since = None
            self.failures = 0


def finish_again(ending: JobEnding, timeline: Timeline, job: Job) -> None:
    """Close a job whose first try at closing met the database down. Outputs already stored are found
    again (jobs.services.job_output_store is idempotent); their `output` events are recorded once:
    those the failed try left pending are dropped, those it managed to store are not added again."""
    timeline.events = [event for event in timeline.events if event.kind != EventKind.OUTPUT]
    stored = set(JobEvent.objects.filter(job=job, kind=EventKind.OUTPUT).values_list("data__output_id", flat=True))
    record = timeline.event

    def event_once(kind: str, **fields: Any) -> None:
        if kind == EventKind.OUTPUT and (fields.get("data") or {}).get("output_id") in stored:
            return
        record(kind, **fields)

    setattr(timeline, "event", event_once)  # noqa: B010  (an instance's method, for this one call)
    try:
        ending.finish()
    finally:
        vars(timeline).pop("event", None)
