"""Draining a backend: what runs finishes, nothing new starts there; new jobs go elsewhere."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from fleet.models import Backend
from jobs import dispatch, sweeps
from jobs.models import Job, JobStatus
from jobs.tracking import job_track
from jobs.wake import wake_mark
from tests.factories import SLEEP_WORKFLOW, JobFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def two_backends(simulator_session, settings):
    settings.COMFYUI_BACKENDS = {"drain-a": simulator_session.url, "drain-b": simulator_session.url}
    settings.COMFYUI_DEFAULT_BACKEND = "drain-a"
    cache.delete_many([wake_mark("drain-a"), wake_mark("drain-b")])  # no wake pending from a test before
    yield
    from anime_production.celery import app

    with app.connection_for_write() as connection:  # no worker serves these queues: clean up
        for queue in ("gpu.drain-a", "gpu.drain-b"):
            connection.default_channel.client.delete(queue, *[f"{queue}:{i}" for i in range(1, 10)])


def test_a_draining_backend_takes_no_waiting_job_and_the_other_does(two_backends):
    Backend.objects.create(name="drain-a", draining=True)
    job = JobFactory.create()
    assert dispatch.job_take_next("drain-a") is None
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.backend == "" and job.deliveries == 0
    taken = dispatch.job_take_next("drain-b")
    assert taken is not None and taken.pk == job.pk and taken.backend == "drain-b"


def test_a_job_delivered_by_id_for_a_draining_backend_is_put_back(two_backends):
    Backend.objects.create(name="drain-a", draining=True)
    job = JobFactory.create(requested_backend="drain-a")
    job_track(str(job.id))
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.submitted_at is None and job.deliveries == 0
    assert Job.objects.get(pk=job.pk).enqueued_at is not None


def test_new_jobs_wake_only_backends_in_service_and_idle(two_backends, api):
    from anime_production.celery import app

    Backend.objects.create(name="drain-a", draining=True)
    response = api.post("/api/jobs/", {"workflow": SLEEP_WORKFLOW, "job_type": "image"}, format="json")
    assert response.status_code == 201 and response.json()["backend"] == ""
    assert sweeps.broker_queue_length(app, "gpu.drain-a") == 0
    assert sweeps.broker_queue_length(app, "gpu.drain-b") == 1


def test_a_busy_backend_is_not_woken(two_backends, api):
    from anime_production.celery import app

    JobFactory.create(backend="drain-a", status=JobStatus.RUNNING)
    response = api.post("/api/jobs/", {"workflow": SLEEP_WORKFLOW, "job_type": "image"}, format="json")
    assert response.status_code == 201
    assert sweeps.broker_queue_length(app, "gpu.drain-a") == 0
    assert sweeps.broker_queue_length(app, "gpu.drain-b") == 1
