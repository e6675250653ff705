"""The beat sweeps and the retry policy: every job accounted for, against the real simulator."""

from __future__ import annotations

from datetime import timedelta

import factory
import pytest
import requests
from django.utils import timezone

from jobs import services, sweeps
from jobs.models import FailureCategory, Job, JobAttempt, JobStatus
from tests.factories import JobFactory as BaseJobFactory

# A backend no worker serves, so a session's GPU worker never picks up what these tests enqueue.
BACKEND = "sweeps"
QUEUE = f"gpu.{BACKEND}"


class JobFactory(BaseJobFactory):
    backend = factory.LazyAttribute(lambda job: BACKEND)


pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def purge_gpu_queue() -> None:
    """No worker runs in these tests: drop what they enqueued (this run's own Redis keys only)."""
    from anime_production.celery import app

    with app.connection_for_write() as connection:
        connection.default_channel.client.delete(QUEUE, *[f"{QUEUE}:{i}" for i in range(1, 10)])


@pytest.fixture
def sim(simulator_session, settings):
    settings.COMFYUI_BACKENDS = {BACKEND: simulator_session.url}
    settings.JOB_RETRY_BACKOFF_SECONDS = 0.1
    purge_gpu_queue()
    yield simulator_session
    purge_gpu_queue()


def orphan(status: str = JobStatus.RUNNING, **fields) -> Job:
    """An active job whose tracker stopped beating a minute ago."""
    return JobFactory.create(
        status=status,
        heartbeat_at=timezone.now() - timedelta(minutes=1),
        started_at=timezone.now() - timedelta(minutes=2),
        **fields,
    )


def test_orphan_whose_prompt_vanished_is_failed_lost_and_retried(sim):
    job = orphan()
    services.job_attempt_open(job, worker="dead-host")
    sweeps.sweep_orphaned_jobs()
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.attempt == 2
    assert str(job.prompt_id) != str(job.id), "a new attempt gets a new prompt"
    (first,) = JobAttempt.objects.filter(job=job)
    assert (first.number, first.outcome, first.failure_category) == (1, "failed", FailureCategory.LOST)


def test_orphan_that_never_reached_comfyui_is_worker_lost(sim):
    job = orphan(status=JobStatus.SUBMITTED)
    sweeps.sweep_orphaned_jobs()
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.attempt == 2
    assert job.events.filter(kind="status", data__category=FailureCategory.WORKER_LOST).exists()


def test_orphan_still_running_in_comfyui_is_resumed_not_failed(sim):
    job = orphan(status=JobStatus.SUBMITTED, enqueued_at=timezone.now() - timedelta(minutes=5))
    requests.post(
        f"{sim.url}/prompt",
        json={
            "prompt": {
                "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 7}},
                "2": {"class_type": "TestSleep", "inputs": {"value": ["1", 0], "seconds": 5}},
                "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
            },
            "prompt_id": str(job.prompt_id),
            "client_id": "someone",
        },
        timeout=5,
    ).raise_for_status()
    before = job.enqueued_at
    sweeps.sweep_orphaned_jobs()
    job.refresh_from_db()
    assert job.status == JobStatus.SUBMITTED, "a prompt ComfyUI still runs is not lost"
    assert job.enqueued_at > before, "a new tracker was sent to re-attach"
    requests.post(f"{sim.url}/interrupt", json={}, timeout=5)


def test_stuck_job_is_interrupted_and_failed_stuck(sim, settings):
    settings.JOB_STUCK_FLOOR_SECONDS = 30
    settings.JOB_MAX_ATTEMPTS = 1
    job = JobFactory.create(
        status=JobStatus.RUNNING,
        started_at=timezone.now() - timedelta(minutes=5),
        last_progress_at=timezone.now() - timedelta(minutes=2),
        current_node_name="KSampler",
        heartbeat_at=timezone.now(),
    )
    sweeps.sweep_stuck_jobs()
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.failure_category == FailureCategory.STUCK
    assert "no progress for" in job.error_message and "KSampler" in job.error_message


def test_job_running_past_the_maximum_is_timed_out(sim, settings):
    settings.JOB_MAX_SECONDS = 60
    job = JobFactory.create(
        status=JobStatus.RUNNING,
        started_at=timezone.now() - timedelta(minutes=5),
        last_progress_at=timezone.now(),
        heartbeat_at=timezone.now(),
    )
    sweeps.sweep_stuck_jobs()
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.failure_category == FailureCategory.TIMED_OUT


def test_job_with_recent_progress_is_left_alone(sim):
    job = JobFactory.create(
        status=JobStatus.RUNNING,
        started_at=timezone.now() - timedelta(minutes=5),
        last_progress_at=timezone.now() - timedelta(seconds=5),
        heartbeat_at=timezone.now(),
    )
    sweeps.sweep_stuck_jobs()
    sweeps.sweep_orphaned_jobs()
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING


def test_long_wait_is_flagged_once(sim, settings):
    settings.JOB_WAIT_FLAG_SECONDS = 60
    job = JobFactory.create(enqueued_at=timezone.now())
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    sweeps.sweep_waiting_jobs()
    sweeps.sweep_waiting_jobs()
    job.refresh_from_db()
    assert job.wait_flagged
    assert job.events.filter(kind="note").count() == 1


def test_a_waiting_job_whose_wake_was_lost_wakes_an_idle_backend_again(sim):
    from anime_production.celery import app

    JobFactory.create(backend="", enqueued_at=timezone.now() - timedelta(minutes=10))
    assert sweeps.broker_queue_length(app, QUEUE) == 0
    sweeps.sweep_waiting_jobs()
    assert sweeps.broker_queue_length(app, QUEUE) == 1, "the idle backend is woken"
    sweeps.sweep_waiting_jobs()
    assert sweeps.broker_queue_length(app, QUEUE) == 1, "one pending wake is enough"


@pytest.mark.parametrize(
    "category,retried",
    [
        (FailureCategory.COMFYUI_UNREACHABLE, True),
        (FailureCategory.LOST, True),
        (FailureCategory.STUCK, True),
        (FailureCategory.OUT_OF_MEMORY, True),
        (FailureCategory.VALIDATION, False),
        (FailureCategory.MISSING_MODEL, False),
        (FailureCategory.MISSING_NODE, False),
        (FailureCategory.NODE_ERROR, False),
    ],
)
def test_retry_policy_by_category(sim, category, retried):
    job = JobFactory.create(status=JobStatus.RUNNING)
    services.job_attempt_open(job, worker="w")
    services.job_fail(job, category, "boom")
    job.refresh_from_db()
    assert (job.status == JobStatus.QUEUED) is retried
    assert (job.status == JobStatus.FAILED) is not retried


def test_out_of_memory_is_retried_only_once(sim):
    job = JobFactory.create(status=JobStatus.RUNNING)
    for _ in range(2):
        services.job_attempt_open(job, worker="w")
        services.job_fail(job, FailureCategory.OUT_OF_MEMORY, "CUDA out of memory")
        job.refresh_from_db()
        if job.status == JobStatus.QUEUED:
            services.job_transition(job, JobStatus.SUBMITTED)
    assert job.status == JobStatus.FAILED and job.failure_category == FailureCategory.OUT_OF_MEMORY
    assert list(JobAttempt.objects.filter(job=job).values_list("failure_category", flat=True)) == [
        FailureCategory.OUT_OF_MEMORY,
        FailureCategory.OUT_OF_MEMORY,
    ]


def test_manual_retry_makes_a_new_job_linked_to_the_original(sim, api, user):
    failed = JobFactory.create(user=user, status=JobStatus.FAILED, failure_category=FailureCategory.NODE_ERROR)
    response = api.post(f"/api/jobs/{failed.id}/retry/")
    assert response.status_code == 201
    retry = Job.objects.get(pk=response.json()["id"])
    assert retry.retry_of_id == failed.id and retry.status == JobStatus.QUEUED and retry.workflow == failed.workflow
    assert api.post(f"/api/jobs/{retry.id}/retry/").status_code == 409, "a waiting job cannot be retried"
