"""The events a webhook may ask for, and which webhooks an event goes to (pure)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

JOB_STARTED = "job.started"
JOB_COMPLETED = "job.completed"
JOB_FAILED = "job.failed"
JOB_CANCELLED = "job.cancelled"
JOB_PROGRESS = "job.progress"  # throttled per job (WEBHOOK_PROGRESS_SECONDS)
JOB_EVENTS = (JOB_STARTED, JOB_COMPLETED, JOB_FAILED, JOB_CANCELLED, JOB_PROGRESS)
JOB_FINAL_EVENTS = frozenset({JOB_COMPLETED, JOB_FAILED, JOB_CANCELLED})
# What a job's own webhook gets when its submitter names no events.
JOB_DEFAULT_EVENTS = (JOB_STARTED, JOB_COMPLETED, JOB_FAILED, JOB_CANCELLED)

# Fleet-wide conditions (the alerts app): for staff who hold the permission to receive them.
ALERT_FAILURE_RATE = "alert.failure_rate"
ALERT_BACKEND_UNREACHABLE = "alert.backend_unreachable"
ALERT_JOB_WAITING = "alert.job_waiting"
ALERT_RESOLVED = "alert.resolved"
ALERT_EVENTS = (ALERT_FAILURE_RATE, ALERT_BACKEND_UNREACHABLE, ALERT_JOB_WAITING, ALERT_RESOLVED)

# Sent on request (POST /api/webhooks/{id}/test/), whatever the webhook's events.
WEBHOOK_TEST = "webhook.test"

EVENTS = JOB_EVENTS + ALERT_EVENTS


def is_alert(event: str) -> bool:
    return event in ALERT_EVENTS


@dataclass(frozen=True)
class Subject:
    """What an event is about, as plain data: a job (its id, owner, type, backend) or a backend."""

    job_id: str | None = None
    owner_id: int | None = None
    job_type: str = ""
    backend: str = ""


def webhook_wants(
    event: str, subject: Subject, *, events: Collection[str], job_types: Collection[str], backends: Collection[str]
) -> bool:
    """Whether a webhook with these events and filters (empty filter: any) takes this event."""
    if event not in events:
        return False
    if job_types and subject.job_type and subject.job_type not in job_types:
        return False
    return not (backends and subject.backend and subject.backend not in backends)
