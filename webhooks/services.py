"""Writes: webhooks made, changed and rotated; events turned into messages to send.

Emitting is called by the layers above with plain data (`webhook_job_event` from jobs.services,
`webhook_alert_event` from the alerts): it picks the webhooks that want the event and, after the
caller's transaction commits, enqueues one send per webhook on the `webhooks` Celery queue. It
never raises and never waits on a receiver: a webhook that is down cannot slow or break a job.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from fleet.workers import WEBHOOK_QUEUE
from webhooks import selectors
from webhooks.delivery import MESSAGE_ATTEMPT_TASK
from webhooks.events import JOB_FINAL_EVENTS, JOB_PROGRESS, WEBHOOK_TEST, Subject
from webhooks.models import Webhook, WebhookMessage
from webhooks.signing import secret_generate

logger = logging.getLogger(__name__)

# By name, as jobs enqueues its tracker: the sender needs no import of the task modules.
MESSAGE_SEND_TASK = "webhooks.tasks.webhook_message_send"


class WebhookRefused(Exception):
    """A webhook cannot be made as asked (the message says why)."""


# --- webhooks ------------------------------------------------------------------------------------


def webhook_create(
    *,
    owner: Any,
    url: str,
    events: list[str],
    job_types: list[str] | None = None,
    backends: list[str] | None = None,
    description: str = "",
) -> Webhook:
    """A user's subscription, with a new secret (the caller shows it once)."""
    limit = settings.WEBHOOK_MAX_PER_USER
    with transaction.atomic():
        if selectors.subscription_count(owner) >= limit:
            raise WebhookRefused(f"you have {limit} webhooks, the most allowed; delete one first")
        return Webhook.objects.create(
            owner=owner,
            url=url,
            events=events,
            job_types=job_types or [],
            backends=backends or [],
            description=description,
            secret=secret_generate(),
        )


def webhook_update(webhook: Webhook, **fields: Any) -> Webhook:
    for name, value in fields.items():
        setattr(webhook, name, value)
    webhook.save()
    return webhook


def webhook_secret_rotate(webhook: Webhook) -> Webhook:
    """A new secret; the old one goes on signing alongside it for WEBHOOK_SECRET_GRACE_SECONDS, so
    a receiver can switch without losing messages."""
    webhook.previous_secret = webhook.secret
    webhook.previous_secret_until = timezone.now() + timedelta(seconds=settings.WEBHOOK_SECRET_GRACE_SECONDS)
    webhook.secret = secret_generate()
    webhook.save(update_fields=["secret", "previous_secret", "previous_secret_until", "updated_at"])
    return webhook


def job_webhook_create(*, job_id: uuid.UUID, owner: Any, url: str, events: list[str], secret: str = "") -> Webhook:
    """A job's own callback, named at submission; its secret is the submitter's, or a new one."""
    return Webhook.objects.create(
        owner=owner, job_id=job_id, url=url, events=events, secret=secret or secret_generate()
    )


def job_webhook_copy(*, from_job_id: uuid.UUID, to_job_id: uuid.UUID) -> Webhook | None:
    """A job retried by hand keeps the original's callback, secret included: whoever waits for
    the original's outcome hears about the retry the same way."""
    original = Webhook.objects.filter(job_id=from_job_id).first()
    if original is None:
        return None
    return Webhook.objects.create(
        owner_id=original.owner_id,
        job_id=to_job_id,
        url=original.url,
        events=original.events,
        active=original.active,
        secret=original.secret,
    )


def job_webhook(job_id: uuid.UUID) -> Webhook | None:
    return Webhook.objects.filter(job_id=job_id).first()


# --- emitting ------------------------------------------------------------------------------------


class ProgressGate:
    """At most one job.progress per job per interval. Per process: a job's progress is written by
    its one tracker, so a job's gate lives where its progress is."""

    MAX_JOBS = 10_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}

    def due(self, job_id: str, interval: float, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            last = self._last.get(job_id)
            if last is not None and now - last < interval:
                return False
            if len(self._last) >= self.MAX_JOBS:  # trackers that died without a final event
                self._last = {key: at for key, at in self._last.items() if now - at < interval}
            self._last[job_id] = now
            return True

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._last.pop(job_id, None)


progress_gate = ProgressGate()


def webhook_job_event(*, event: str, subject: Subject, data: dict[str, Any] | Callable[[], dict[str, Any]]) -> None:
    """Send a job's event to the webhooks that want it, after the current transaction commits.
    job.progress goes out at most once per WEBHOOK_PROGRESS_SECONDS per job; its `data` may be a
    function, called only then (a tracker saves progress every 0.6 s). Never raises."""
    job_id = str(subject.job_id)
    if event == JOB_PROGRESS and not progress_gate.due(job_id, settings.WEBHOOK_PROGRESS_SECONDS):
        return
    if callable(data):
        data = data()
    if event in JOB_FINAL_EVENTS:
        progress_gate.forget(job_id)
    occurred_at = timezone.now()
    transaction.on_commit(lambda: _dispatch(event, subject, data, occurred_at, alert=False), robust=True)


def webhook_alert_event(*, event: str, subject: Subject, data: dict[str, Any]) -> None:
    """Send an alert.* event to the subscriptions of those who may receive alerts. Never raises."""
    occurred_at = timezone.now()
    transaction.on_commit(lambda: _dispatch(event, subject, data, occurred_at, alert=True), robust=True)


def _dispatch(event: str, subject: Subject, data: dict[str, Any], occurred_at: datetime, *, alert: bool) -> None:
    try:
        targets = selectors.alert_targets(event, subject) if alert else selectors.job_event_targets(event, subject)
        if not targets:
            return
        body = event_body(event, occurred_at, data)
        event_id = str(uuid.uuid4())
        for webhook_id in targets:
            current_app.signature(
                MESSAGE_SEND_TASK,
                kwargs={
                    "webhook_id": str(webhook_id),
                    "event_id": event_id,
                    "event": event,
                    "job_id": subject.job_id,
                    "body": body,
                },
            ).apply_async(queue=WEBHOOK_QUEUE, retry_policy={"max_retries": 2, "interval_start": 0.1})
    except Exception:  # the job's tracking goes on whatever happens to its webhooks
        logger.exception("could not emit %s for %s", event, subject)


def event_body(event: str, occurred_at: datetime, data: dict[str, Any]) -> str:
    """The Standard Webhooks payload shape: `{"type", "timestamp", "data"}`, compact JSON."""
    payload = {"type": event, "timestamp": occurred_at.isoformat().replace("+00:00", "Z"), "data": data}
    return json.dumps(payload, separators=(",", ":"), default=str)


def webhook_test_send(webhook: Webhook) -> WebhookMessage:
    """A `webhook.test` message to one webhook, whatever events it takes: to check a receiver."""
    data = {"webhook": str(webhook.pk), "message": "a test message; the signature is real"}
    event_id = uuid.uuid4()
    message = WebhookMessage.objects.create(
        webhook=webhook,
        event_id=event_id,
        event=WEBHOOK_TEST,
        body=event_body(WEBHOOK_TEST, timezone.now(), data),
    )
    attempt = current_app.signature(MESSAGE_ATTEMPT_TASK, args=(str(message.pk),))
    transaction.on_commit(lambda: attempt.apply_async(queue=WEBHOOK_QUEUE), robust=True)
    return message
