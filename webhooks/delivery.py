"""Sending messages: one attempt at a time, recorded, retried with backoff for a bounded time.

Runs on the `webhooks` Celery queue only (never a GPU worker). An attempt is claimed by a
compare-and-set on the message's attempt count, so a task delivered twice, or a retry and the sweep
meeting, never sends the same attempt twice. A claimed attempt holds the message for a lease; a
worker that dies mid-attempt leaves it for the sweep once the lease runs out.

Short waits between attempts are Celery countdowns; long ones are left to the sweep
(`webhook_messages_resend_due`, every WEBHOOK_SWEEP_SECONDS): a countdown task waits in the worker
unacknowledged, and one waiting longer than the Redis broker's visibility timeout is delivered
again, like a task running that long (docs/HAZARDS.md).
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timedelta

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from fleet.workers import WEBHOOK_QUEUE
from webhooks import selectors
from webhooks.addresses import UnsafeURL, webhook_target
from webhooks.models import MessageState, Webhook, WebhookDelivery, WebhookMessage
from webhooks.retries import next_attempt_at
from webhooks.sending import Sent, webhook_post
from webhooks.signing import signed_headers

logger = logging.getLogger(__name__)

MESSAGE_ATTEMPT_TASK = "webhooks.tasks.webhook_message_attempt"
# Waits up to this long are countdowns in the worker; longer ones wait for the sweep.
COUNTDOWN_MAX_SECONDS = 300.0
# How long past its due time a message waits before the sweep resends it (its countdown comes first).
SWEEP_GRACE_SECONDS = 10.0
LEASE_MARGIN_SECONDS = 60.0
PRUNE_BATCH = 1000


def webhook_message_send(*, webhook_id: str, event_id: str, event: str, job_id: str | None, body: str) -> None:
    """Record one event's message to one webhook (once, however often the task comes), then try it."""
    if not Webhook.objects.filter(pk=webhook_id).exists():
        return  # deleted since the event
    try:
        message, _ = WebhookMessage.objects.get_or_create(
            webhook_id=webhook_id,
            event_id=event_id,
            defaults={"event": event, "job_id": job_id, "body": body},
        )
    except IntegrityError:  # a second delivery of the task made it at the same moment
        return
    webhook_message_attempt(message.pk)


def webhook_message_attempt(message_id: uuid.UUID | str) -> WebhookDelivery | None:
    """One attempt, if the message is pending and due and this call wins it; None otherwise."""
    now = timezone.now()
    message = WebhookMessage.objects.select_related("webhook").filter(pk=message_id).first()
    if message is None or message.state != MessageState.PENDING:
        return None
    if message.next_attempt_at is not None and message.next_attempt_at > now:
        return None
    attempt = message.attempts + 1
    lease = timedelta(seconds=settings.WEBHOOK_CONNECT_TIMEOUT + settings.WEBHOOK_READ_TIMEOUT + LEASE_MARGIN_SECONDS)
    claimed = WebhookMessage.objects.filter(
        pk=message.pk, state=MessageState.PENDING, attempts=message.attempts
    ).update(attempts=attempt, next_attempt_at=now + lease)
    if not claimed:
        return None
    sent, final = _send(message, now)
    return _record(message, attempt, now, sent, final)


def _send(message: WebhookMessage, now: datetime) -> tuple[Sent, bool]:
    """What the attempt got, and whether no further attempt may help (a refused URL, a disabled webhook)."""
    webhook = message.webhook
    if not webhook.active:
        return Sent(None, 0, error="not sent: the webhook is disabled"), True
    try:
        # Checked again now: the name may resolve elsewhere than when the webhook was made.
        target = webhook_target(webhook.url, allowed_hosts=settings.WEBHOOK_ALLOWED_HOSTS)
    except UnsafeURL as exc:
        return Sent(None, 0, error=f"not sent: {exc}"[:500]), True
    body = message.body.encode()
    headers = signed_headers(message.message_id, int(time.time()), body, selectors.secrets_in_use(webhook, now))
    sent = webhook_post(
        target,
        body,
        headers,
        connect_timeout=settings.WEBHOOK_CONNECT_TIMEOUT,
        read_timeout=settings.WEBHOOK_READ_TIMEOUT,
        max_response_bytes=settings.WEBHOOK_RESPONSE_MAX_BYTES,
    )
    return sent, False


def _record(
    message: WebhookMessage, attempt: int, started: datetime, sent: Sent, final: bool
) -> WebhookDelivery | None:
    finished = timezone.now()
    retry_at = None
    if not sent.delivered and not final:
        retry_at = next_attempt_at(
            attempt,
            first_at=message.created_at,
            now=finished,
            base=settings.WEBHOOK_RETRY_BASE_SECONDS,
            ceiling=settings.WEBHOOK_RETRY_MAX_DELAY_SECONDS,
            retry_for=settings.WEBHOOK_RETRY_FOR_SECONDS,
        )
    state = MessageState.DELIVERED if sent.delivered else MessageState.PENDING if retry_at else MessageState.FAILED
    try:
        with transaction.atomic():
            delivery = WebhookDelivery.objects.create(
                message=message,
                webhook_id=message.webhook_id,
                job_id=message.job_id,
                event=message.event,
                attempt=attempt,
                created_at=started,
                status_code=sent.status_code,
                duration_ms=sent.duration_ms,
                error=sent.error,
                response_excerpt=sent.response_excerpt,
                next_retry_at=retry_at,
            )
            WebhookMessage.objects.filter(pk=message.pk, attempts=attempt).update(
                state=state,
                next_attempt_at=retry_at,
                last_status_code=sent.status_code,
                finished_at=None if retry_at else finished,
            )
            if retry_at is not None:
                _schedule(message.pk, retry_at, finished)
    except IntegrityError:
        if Webhook.objects.filter(pk=message.webhook_id).exists():
            raise
        logger.info("webhook %s was deleted while its message %s was being sent", message.webhook_id, message.pk)
        return None
    logger.info(
        "webhook %s %s attempt %d: %s%s",
        message.message_id,
        message.event,
        attempt,
        sent.status_code or sent.error,
        f", again at {retry_at:%H:%M:%S}" if retry_at else "",
    )
    return delivery


def _schedule(message_id: uuid.UUID, due: datetime, now: datetime) -> None:
    wait = (due - now).total_seconds()
    if wait > COUNTDOWN_MAX_SECONDS:
        return  # the sweep sends it when due
    retry = current_app.signature(MESSAGE_ATTEMPT_TASK, args=(str(message_id),))
    transaction.on_commit(lambda: retry.apply_async(queue=WEBHOOK_QUEUE, countdown=max(wait, 0.0)), robust=True)


def webhook_messages_resend_due(now: datetime | None = None, limit: int = 500) -> int:
    """Enqueue the pending messages whose attempt is due (long backoffs, lost tasks, dead workers)."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=SWEEP_GRACE_SECONDS)
    due = WebhookMessage.objects.filter(state=MessageState.PENDING).filter(
        Q(next_attempt_at__lte=cutoff) | Q(next_attempt_at__isnull=True, created_at__lte=cutoff)
    )
    ids = list(due.order_by("next_attempt_at").values_list("pk", flat=True)[:limit])
    for message_id in ids:
        current_app.signature(MESSAGE_ATTEMPT_TASK, args=(str(message_id),)).apply_async(queue=WEBHOOK_QUEUE)
    return len(ids)


def webhook_records_prune(now: datetime | None = None) -> int:
    """Forget finished messages (and their attempts) older than WEBHOOK_RETENTION_DAYS, and job
    callbacks as old as that with nothing left to send. A batch per call."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.WEBHOOK_RETENTION_DAYS)
    old = WebhookMessage.objects.filter(created_at__lt=cutoff).exclude(state=MessageState.PENDING)
    ids = list(old.values_list("pk", flat=True)[:PRUNE_BATCH])
    deleted, _ = WebhookMessage.objects.filter(pk__in=ids).delete()
    stale_hooks = Webhook.objects.filter(job_id__isnull=False, created_at__lt=cutoff).exclude(
        messages__state=MessageState.PENDING
    )
    hook_ids = list(stale_hooks.values_list("pk", flat=True)[:PRUNE_BATCH])
    hooks_deleted, _ = Webhook.objects.filter(pk__in=hook_ids).delete()
    return deleted + hooks_deleted
