"""Which job events go to which webhooks, progress throttled per job, and emitting that never
slows or breaks a job: the tracker's services enqueue sends on commit, with plain data."""

from __future__ import annotations

import json

import pytest
from standardwebhooks.webhooks import Webhook as ReferenceVerifier

from jobs import services
from jobs.models import JobStatus
from tests.factories import JobFactory, UserFactory
from tests.unit.webhook_queue import webhook_queue_drain, webhook_queue_run
from tests.webhook_receiver import WebhookReceiver
from webhooks import selectors
from webhooks.events import Subject, webhook_wants
from webhooks.models import Webhook
from webhooks.services import ProgressGate, job_webhook_create

pytestmark = pytest.mark.django_db

RECEIVER_URL = "http://127.0.0.1:9/hook"  # never reached in the tests that only look at the queue


@pytest.fixture(autouse=True)
def _clean_queue(settings) -> None:
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    webhook_queue_drain()


def subscription(owner, events, **filters) -> Webhook:
    return Webhook.objects.create(owner=owner, url=RECEIVER_URL, events=events, **filters)


def queued_events() -> list[tuple[str, str]]:
    """(event, webhook id) of each send waiting on the webhooks queue."""
    return [(task.kwargs["event"], task.kwargs["webhook_id"]) for task in webhook_queue_drain()]


@pytest.mark.parametrize(
    "event,events,job_types,backends,wanted",
    [
        ("job.completed", ["job.completed"], [], [], True),
        ("job.failed", ["job.completed"], [], [], False),
        ("job.completed", ["job.completed"], ["video"], [], False),
        ("job.completed", ["job.completed"], ["image"], [], True),
        ("job.completed", ["job.completed"], [], ["gpu2"], False),
        ("job.completed", ["job.completed"], ["image"], ["default"], True),
        ("job.progress", ["job.started", "job.completed"], [], [], False),
    ],
)
def test_an_event_goes_where_its_type_and_filters_are_wanted(event, events, job_types, backends, wanted):
    subject = Subject(job_id="j", owner_id=1, job_type="image", backend="default")
    assert webhook_wants(event, subject, events=events, job_types=job_types, backends=backends) is wanted


def test_a_jobs_event_goes_to_its_own_callback_and_its_owners_subscriptions_only():
    job = JobFactory.create()
    own = job_webhook_create(job_id=job.id, owner=job.user, url=RECEIVER_URL, events=["job.completed"])
    mine = subscription(job.user, ["job.completed"])
    subscription(job.user, ["job.completed"], active=False)
    subscription(job.user, ["job.completed"], job_types=["video"])
    subscription(UserFactory.create(), ["job.completed"])  # someone else's
    other_job = JobFactory.create(user=job.user)
    job_webhook_create(job_id=other_job.id, owner=job.user, url=RECEIVER_URL, events=["job.completed"])
    subject = Subject(job_id=str(job.id), owner_id=job.user_id, job_type="image", backend="default")
    assert set(selectors.job_event_targets("job.completed", subject)) == {own.pk, mine.pk}
    assert selectors.job_event_targets("job.started", subject) == []


def test_each_status_a_job_enters_is_sent_with_its_rest_state(django_capture_on_commit_callbacks):
    job = JobFactory.create()
    hook = job_webhook_create(
        job_id=job.id,
        owner=job.user,
        url=RECEIVER_URL,
        events=["job.started", "job.completed", "job.failed", "job.cancelled"],
    )
    with django_capture_on_commit_callbacks(execute=True):
        services.job_transition(job, JobStatus.SUBMITTED)
        services.job_transition(job, JobStatus.RUNNING)
        services.job_fail(job, "node_error", "boom")
    tasks = webhook_queue_drain()
    assert [task.kwargs["event"] for task in tasks] == ["job.started", "job.failed"]
    assert {task.kwargs["webhook_id"] for task in tasks} == {str(hook.pk)}
    failed = tasks[-1].kwargs
    assert failed["job_id"] == str(job.id)
    payload = json.loads(failed["body"])
    assert payload["type"] == "job.failed" and payload["timestamp"].endswith("Z")
    data = payload["data"]
    assert data["status"] == "failed" and data["error"]["category"] == "node_error"
    assert data["url"] == f"http://127.0.0.1:8000/api/jobs/{job.id}/"


def test_a_job_that_goes_back_to_the_queue_sends_nothing(django_capture_on_commit_callbacks):
    job = JobFactory.create()
    subscription(job.user, ["job.started", "job.completed", "job.failed", "job.cancelled"])
    with django_capture_on_commit_callbacks(execute=True):
        services.job_transition(job, JobStatus.SUBMITTED)
        services.job_fail(job, "comfyui_unreachable", "connection refused")  # retried: back to queued
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED
    assert queued_events() == []


def test_progress_goes_out_at_most_once_per_job_per_interval(settings, django_capture_on_commit_callbacks):
    settings.WEBHOOK_PROGRESS_SECONDS = 3600
    job = JobFactory.create(status=JobStatus.RUNNING)
    other = JobFactory.create(status=JobStatus.RUNNING, user=job.user)
    hook = subscription(job.user, ["job.progress"])
    with django_capture_on_commit_callbacks(execute=True):
        for value in range(5):
            job.step_value, job.step_max, job.progress = value, 20, value / 20
            assert services.job_progress_save(job)
        assert services.job_progress_save(other)
    assert queued_events() == [("job.progress", str(hook.pk))] * 2


def test_the_progress_gate_opens_again_after_its_interval_and_after_the_end():
    gate = ProgressGate()
    assert gate.due("a", 10, now=100.0)
    assert not gate.due("a", 10, now=105.0)
    assert gate.due("b", 10, now=105.0)
    assert gate.due("a", 10, now=110.5)
    gate.forget("a")
    assert gate.due("a", 10, now=111.0)


def test_a_progress_event_is_a_compact_state_with_the_job_url(settings, django_capture_on_commit_callbacks):
    settings.WEBHOOK_PROGRESS_SECONDS = 0.001
    owner = UserFactory.create()
    job = JobFactory.create(user=owner, status=JobStatus.RUNNING, current_node_id="3", current_node_name="KSampler")
    with WebhookReceiver() as receiver:
        hook = Webhook.objects.create(owner=owner, url=receiver.url, events=["job.progress"])
        job.step_value, job.step_max, job.progress = 15, 20, 0.6
        with django_capture_on_commit_callbacks(execute=True):
            services.job_progress_save(job)
        webhook_queue_run()
        (request,) = receiver.requests()
    data = ReferenceVerifier(hook.secret).verify(request.body, request.headers)["data"]
    assert data["progress_percent"] == 60.0 and data["step"] == {"value": 15, "max": 20}
    assert data["message"] == "KSampler: step 15/20" and data["url"].endswith(f"/api/jobs/{job.id}/")


def test_a_broken_webhook_machinery_never_breaks_the_job(monkeypatch, django_capture_on_commit_callbacks):
    job = JobFactory.create()
    subscription(job.user, ["job.cancelled"])

    def broken(*args, **kwargs):
        raise RuntimeError("the webhooks table is gone")

    monkeypatch.setattr(selectors, "job_event_targets", broken)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.job_cancel(job).status == JobStatus.CANCELLED
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED


def test_a_retry_by_hand_keeps_the_original_callback():
    job = JobFactory.create(status=JobStatus.FAILED)
    original = job_webhook_create(job_id=job.id, owner=job.user, url=RECEIVER_URL, events=["job.completed"])
    retry = services.job_retry(job)
    copied = Webhook.objects.get(job_id=retry.id)
    assert (copied.url, copied.events, copied.secret) == (original.url, original.events, original.secret)
