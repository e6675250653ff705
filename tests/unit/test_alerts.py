"""Alerts: a condition sends its alert.* event once while it holds, alert.resolved once when it
clears, to the subscriptions of staff who may receive alerts; no storm."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from alerts.evaluation import alerts_evaluate
from alerts.models import AlertKind, AlertRule, AlertState
from jobs.models import Job, JobStatus
from monitoring.models import BackendHealthSample
from tests.factories import JobFactory, UserFactory
from tests.unit.webhook_queue import webhook_queue_drain
from webhooks.models import Webhook

pytestmark = pytest.mark.django_db

ALERTS = ["alert.failure_rate", "alert.backend_unreachable", "alert.job_waiting", "alert.resolved"]


@pytest.fixture(autouse=True)
def _only_the_rule_under_test(settings) -> None:
    """Each test switches on the settings rule it is about."""
    settings.ALERT_FAILURE_RATE_PERCENT = 0
    settings.ALERT_UNREACHABLE_MINUTES = 0
    settings.ALERT_JOB_WAIT_MINUTES = 0
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    webhook_queue_drain()


@pytest.fixture
def evaluate(django_capture_on_commit_callbacks):
    """alerts_evaluate as the beat task runs it: outside a transaction, so its sends are enqueued."""

    def run():
        with django_capture_on_commit_callbacks(execute=True):
            return alerts_evaluate()

    return run


@pytest.fixture
def on_call(db) -> Webhook:
    """A staff member's subscription to every alert."""
    staff = UserFactory.create(is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="receive_alerts"))
    return Webhook.objects.create(owner=staff, url="http://127.0.0.1:9/alerts", events=ALERTS)


def sent() -> list[dict]:
    """The alert payloads waiting on the webhooks queue (emptied)."""
    return [json.loads(task.kwargs["body"]) for task in webhook_queue_drain()]


def finished_jobs(count: int, status: str, minutes_ago: float = 1, backend: str = "default") -> None:
    at = timezone.now() - timedelta(minutes=minutes_ago)
    for _ in range(count):
        JobFactory.create(status=status, finished_at=at, backend=backend)


def probe(reachable: bool, minutes_ago: float, backend: str = "default") -> None:
    sample = BackendHealthSample.objects.create(
        backend=backend, reachable=reachable, error="" if reachable else "refused"
    )
    BackendHealthSample.objects.filter(pk=sample.pk).update(checked_at=timezone.now() - timedelta(minutes=minutes_ago))


def test_a_failure_rate_alert_fires_once_and_clears_once(settings, on_call, evaluate):
    settings.ALERT_FAILURE_RATE_PERCENT = 50
    settings.ALERT_FAILURE_RATE_MINUTES = 15
    settings.ALERT_FAILURE_RATE_MIN_JOBS = 5
    finished_jobs(3, JobStatus.FAILED)
    finished_jobs(2, JobStatus.COMPLETED)
    finished_jobs(5, JobStatus.FAILED, minutes_ago=30)  # outside the window
    evaluate()
    (fired,) = sent()
    assert fired["type"] == "alert.failure_rate"
    data = fired["data"]
    assert data["state"] == "firing" and data["backend"] == "default"
    assert data["details"] == {"failed": 3, "finished": 5, "percent": 60.0, "minutes": 15}
    assert "3 of 5 jobs failed (60%)" in data["message"] and data["dashboard_url"].endswith(
        "/admin/dashboard/backends/"
    )
    for _ in range(3):
        evaluate()
    assert sent() == [], "a condition that still holds sends nothing more"
    finished_jobs(2, JobStatus.COMPLETED)  # 3 of 7: under 50 %
    evaluate()
    (resolved,) = sent()
    assert resolved["type"] == "alert.resolved" and resolved["data"]["alert"] == "failure_rate"
    evaluate()
    assert sent() == []


def test_too_few_jobs_are_no_failure_rate(settings, on_call, evaluate):
    settings.ALERT_FAILURE_RATE_PERCENT = 50
    settings.ALERT_FAILURE_RATE_MIN_JOBS = 5
    finished_jobs(4, JobStatus.FAILED)
    JobFactory.create(status=JobStatus.CANCELLED, finished_at=timezone.now())  # a cancel is no failure
    assert evaluate() == [] and sent() == []


def test_a_backend_unreachable_for_n_minutes_alerts_until_a_probe_succeeds(settings, on_call, evaluate):
    settings.ALERT_UNREACHABLE_MINUTES = 3
    probe(True, minutes_ago=10)
    probe(False, minutes_ago=2)
    probe(False, minutes_ago=1)
    assert evaluate() == [], "down for 2 minutes only"
    probe(False, minutes_ago=4)
    BackendHealthSample.objects.filter(reachable=True).delete()  # down since 4 minutes, nothing earlier
    (change,) = evaluate()
    assert change.event == "alert.backend_unreachable"
    assert sent()[0]["data"]["details"]["last_error"] == "refused"
    assert evaluate() == []
    probe(True, minutes_ago=0)
    assert [change.event for change in evaluate()] == ["alert.resolved"]


def test_a_job_waiting_too_long_alerts_once_per_backend_however_many_wait(settings, on_call, evaluate):
    settings.ALERT_JOB_WAIT_MINUTES = 30
    for _ in range(5):
        job = JobFactory.create()
        Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(minutes=45))
    JobFactory.create()  # waiting for a minute: fine
    evaluate()
    (fired,) = sent()
    assert fired["type"] == "alert.job_waiting" and fired["data"]["details"]["waiting"] == 5
    Job.objects.update(status=JobStatus.RUNNING)
    assert [change.event for change in evaluate()] == ["alert.resolved"]


def test_admin_rules_alert_on_their_own_backend_and_stop_when_switched_off(on_call, settings, evaluate):
    settings.COMFYUI_BACKENDS = {"default": "http://127.0.0.1:8188", "gpu2": "http://127.0.0.1:8189"}
    rule = AlertRule.objects.create(name="gpu2 queue", kind=AlertKind.JOB_WAITING, backend="gpu2", minutes=5)
    for backend in ("default", "gpu2"):
        job = JobFactory.create(requested_backend=backend)  # it asked for that backend
        Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(minutes=10))
    (change,) = evaluate()
    assert (change.state.rule_name, change.state.backend) == ("gpu2 queue", "gpu2")
    AlertRule.objects.filter(pk=rule.pk).update(active=False)
    assert [change.event for change in evaluate()] == ["alert.resolved"]
    assert not AlertState.objects.filter(firing=True).exists()


def test_alerts_reach_only_staff_who_may_receive_them(settings, on_call, evaluate):
    settings.ALERT_JOB_WAIT_MINUTES = 30
    Webhook.objects.create(owner=UserFactory.create(), url=on_call.url, events=ALERTS)  # an artist
    Webhook.objects.create(owner=UserFactory.create(is_staff=True), url=on_call.url, events=ALERTS)  # no permission
    superuser = UserFactory.create(is_staff=True, is_superuser=True)
    boss = Webhook.objects.create(owner=superuser, url=on_call.url, events=["alert.job_waiting"])
    job = JobFactory.create()
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(hours=1))
    evaluate()
    assert {task.kwargs["webhook_id"] for task in webhook_queue_drain()} == {str(on_call.pk), str(boss.pk)}
