"""Sending a message: every attempt recorded, retried with backoff for a bounded time, the URL
checked again at delivery, no redirect followed, bounded answers and timeouts."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from standardwebhooks.webhooks import Webhook as ReferenceVerifier

from devtools.processes import free_port
from tests.factories import UserFactory
from tests.webhook_receiver import WebhookReceiver
from webhooks.delivery import webhook_message_attempt, webhook_message_send, webhook_messages_resend_due
from webhooks.models import MessageState, Webhook, WebhookDelivery, WebhookMessage
from webhooks.retries import next_attempt_at, retry_delay, retry_schedule
from webhooks.services import event_body

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _local_receivers_allowed(settings) -> None:
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]


def webhook_to(url: str) -> Webhook:
    return Webhook.objects.create(owner=UserFactory.create(), url=url, events=["job.completed"])


def send(webhook: Webhook, data: dict | None = None) -> WebhookMessage:
    body = event_body("job.completed", timezone.now(), data or {"id": "job-1", "status": "completed"})
    event_id = str(uuid.uuid4())
    webhook_message_send(webhook_id=str(webhook.pk), event_id=event_id, event="job.completed", job_id=None, body=body)
    return WebhookMessage.objects.get(webhook=webhook, event_id=event_id)


def make_due(message: WebhookMessage) -> None:
    WebhookMessage.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))


def test_the_backoff_doubles_up_to_its_ceiling_within_the_bounded_time():
    assert [retry_delay(n, base=30, ceiling=3600) for n in (1, 2, 3, 7, 8, 20)] == [30, 60, 120, 1920, 3600, 3600]
    schedule = retry_schedule(base=30, ceiling=3600, retry_for=24 * 3600)
    assert schedule[:8] == [30, 60, 120, 240, 480, 960, 1920, 3600]
    assert sum(schedule) <= 24 * 3600 < sum(schedule) + 3600
    now = timezone.now()
    assert next_attempt_at(1, first_at=now, now=now, base=30, ceiling=3600, retry_for=60) == now + timedelta(seconds=30)
    assert (
        next_attempt_at(2, first_at=now, now=now + timedelta(seconds=30), base=30, ceiling=3600, retry_for=60) is None
    )


def test_a_delivery_is_signed_recorded_and_sent_once():
    with WebhookReceiver() as receiver:
        webhook = webhook_to(receiver.url)
        message = send(webhook)
        (request,) = receiver.requests()
    payload = ReferenceVerifier(webhook.secret).verify(request.body, request.headers)
    assert payload["type"] == "job.completed" and payload["data"]["status"] == "completed"
    assert request.headers["webhook-id"] == f"msg_{message.pk.hex}" and request.path == "/hooks/anime"
    assert request.headers["content-type"] == "application/json"
    message.refresh_from_db()
    assert message.state == MessageState.DELIVERED and message.attempts == 1 and message.last_status_code == 204
    (delivery,) = WebhookDelivery.objects.all()
    assert delivery.status_code == 204 and delivery.next_retry_at is None and delivery.error == ""
    # The same task delivered again by the broker sends nothing more.
    assert webhook_message_attempt(message.pk) is None
    webhook_message_send(
        webhook_id=str(webhook.pk), event_id=str(message.event_id), event=message.event, job_id=None, body=message.body
    )
    assert WebhookDelivery.objects.count() == 1


def test_a_receiver_that_fails_is_tried_again_with_the_same_message_id_and_body():
    with WebhookReceiver(statuses=[500, 503]) as receiver:
        message = send(webhook_to(receiver.url))
        first = WebhookDelivery.objects.get()
        assert first.status_code == 500 and first.next_retry_at is not None
        message.refresh_from_db()
        assert message.state == MessageState.PENDING and message.next_attempt_at == first.next_retry_at
        assert webhook_message_attempt(message.pk) is None, "not due yet: a retry that comes early waits"
        for expected in (503, 204):
            make_due(message)
            attempt = webhook_message_attempt(message.pk)
            assert attempt is not None and attempt.status_code == expected
        requests = receiver.requests()
    assert [d.status_code for d in WebhookDelivery.objects.order_by("attempt")] == [500, 503, 204]
    assert len({r.headers["webhook-id"] for r in requests}) == 1
    assert len({r.body for r in requests}) == 1
    message.refresh_from_db()
    assert message.state == MessageState.DELIVERED and message.attempts == 3


def test_retries_stop_after_the_bounded_time(settings):
    settings.WEBHOOK_RETRY_BASE_SECONDS = 30
    settings.WEBHOOK_RETRY_FOR_SECONDS = 60
    with WebhookReceiver(default_status=500) as receiver:
        message = send(webhook_to(receiver.url))
        make_due(message)
        webhook_message_attempt(message.pk)  # the next wait (60 s) would end past the 60 s allowed
    message.refresh_from_db()
    assert message.state == MessageState.FAILED and message.finished_at is not None
    assert [d.next_retry_at is None for d in WebhookDelivery.objects.order_by("attempt")] == [False, True]


def test_a_receiver_that_is_down_is_recorded_and_retried():
    message = send(webhook_to(f"http://127.0.0.1:{free_port()}/hook"))
    (delivery,) = WebhookDelivery.objects.all()
    assert delivery.status_code is None and "refused" in delivery.error.lower()
    assert delivery.next_retry_at is not None
    message.refresh_from_db()
    assert message.state == MessageState.PENDING


def test_the_url_is_checked_again_at_delivery_and_a_refusal_is_final(settings):
    with WebhookReceiver() as receiver:
        webhook = webhook_to(receiver.url)
        settings.WEBHOOK_ALLOWED_HOSTS = []  # as if the name now resolved to loopback
        message = send(webhook)
        assert receiver.requests() == []
    (delivery,) = WebhookDelivery.objects.all()
    assert delivery.error.startswith("not sent: 127.0.0.1 is a loopback address") and delivery.next_retry_at is None
    message.refresh_from_db()
    assert message.state == MessageState.FAILED


def test_a_redirect_is_an_answer_not_followed():
    with WebhookReceiver(statuses=[302], headers={"location": "http://169.254.169.254/latest/"}) as receiver:
        send(webhook_to(receiver.url))
        assert len(receiver.requests()) == 1
    (delivery,) = WebhookDelivery.objects.all()
    assert delivery.status_code == 302 and delivery.next_retry_at is not None


def test_at_most_a_few_kilobytes_of_an_answer_are_read(settings):
    settings.WEBHOOK_RESPONSE_MAX_BYTES = 512
    with WebhookReceiver(default_status=200, answer=b"\x00ok" + b"x" * 100_000) as receiver:
        send(webhook_to(receiver.url))
    (delivery,) = WebhookDelivery.objects.all()
    assert delivery.status_code == 200 and len(delivery.response_excerpt) == 511  # the NUL is dropped
    assert delivery.response_excerpt.startswith("okxxx")


def test_a_receiver_slower_than_the_read_timeout_is_a_failed_attempt(settings):
    settings.WEBHOOK_READ_TIMEOUT = 0.3
    with WebhookReceiver(delay=2.0) as receiver:
        send(webhook_to(receiver.url))
    (delivery,) = WebhookDelivery.objects.all()
    assert delivery.status_code is None and "timed out" in delivery.error.lower()
    assert delivery.duration_ms < 1500 and delivery.next_retry_at is not None


def test_a_disabled_webhook_gets_nothing():
    with WebhookReceiver() as receiver:
        webhook = webhook_to(receiver.url)
        Webhook.objects.filter(pk=webhook.pk).update(active=False)
        message = send(webhook)
        assert receiver.requests() == []
    message.refresh_from_db()
    assert message.state == MessageState.FAILED
    assert WebhookDelivery.objects.get().error == "not sent: the webhook is disabled"


def test_the_sweep_resends_what_is_due_and_nothing_else(django_capture_on_commit_callbacks):
    from tests.unit.webhook_queue import webhook_queue_drain

    webhook_queue_drain()
    message = send(webhook_to(f"http://127.0.0.1:{free_port()}/hook"))  # failed once, retry scheduled
    webhook_queue_drain()  # the retry's countdown task, lost here as if its worker died
    assert webhook_messages_resend_due() == 0, "not due yet"
    later = timezone.now() + timedelta(hours=1)
    assert webhook_messages_resend_due(now=later) == 1
    (task,) = webhook_queue_drain()
    assert task.name == "webhooks.tasks.webhook_message_attempt" and task.args == [str(message.pk)]
