"""Celery tasks of the `webhooks` queue: thin. They take plain data or ids and call a service.

A send's whole duration is bounded by its time limits, above the connect and read timeouts: a
receiver that drips its answer a byte at a time cannot hold a worker.
"""

from celery import shared_task
from django.conf import settings

from webhooks import delivery

SEND_TIME_LIMIT = settings.WEBHOOK_CONNECT_TIMEOUT + settings.WEBHOOK_READ_TIMEOUT + 15
SEND_OPTIONS = {
    "acks_late": True,
    "ignore_result": True,
    "soft_time_limit": SEND_TIME_LIMIT,
    "time_limit": SEND_TIME_LIMIT + 15,
}


@shared_task(**SEND_OPTIONS)
def webhook_message_send(*, webhook_id: str, event_id: str, event: str, job_id: str | None, body: str) -> None:
    """An event's message to one webhook: recorded, then its first attempt."""
    delivery.webhook_message_send(webhook_id=webhook_id, event_id=event_id, event=event, job_id=job_id, body=body)


@shared_task(**SEND_OPTIONS)
def webhook_message_attempt(message_id: str) -> None:
    """The next attempt of a pending message, when due (a retry, a test message)."""
    delivery.webhook_message_attempt(message_id)


@shared_task(ignore_result=True)
def webhook_sweep() -> None:
    """Beat, on the webhooks queue: resend what is due and no task carries; forget old records."""
    delivery.webhook_messages_resend_due()
    delivery.webhook_records_prune()
