"""Draining a backend: what runs finishes, nothing new starts there; new jobs go elsewhere."""

from __future__ import annotations

import pytest

from fleet.models import Backend
from jobs import services, sweeps
from jobs.models import Job, JobStatus
from jobs.tracking import job_track
from tests.factories import SLEEP_WORKFLOW, JobFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def two_backends(simulator_session, settings):
    settings.COMFYUI_BACKENDS = {"drain-a": simulator_session.url, "drain-b": simulator_session.url}
    settings.COMFYUI_DEFAULT_BACKEND = "drain-a"
    yield
    from anime_production.celery import app

    with app.connection_for_write() as connection:  # no worker serves these queues: clean up
        for queue in ("gpu.drain-a", "gpu.drain-b"):
            connection.default_channel.client.delete(queue, *[f"{queue}:{i}" for i in range(1, 10)])


def test_waiting_job_on_a_draining_backend_is_not_started(two_backends):
    from anime_production.celery import app

    Backend.objects.create(name="drain-a", draining=True)
    job = JobFactory.create(backend="drain-a")
    job_track(str(job.id))
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.submitted_at is None and job.deliveries == 0
    # It is put back for later (a countdown message), not dropped.
    assert sweeps.broker_queue_length(app, "gpu.drain-a") == 1
    assert Job.objects.get(pk=job.pk).enqueued_at is not None


def test_new_jobs_without_a_backend_avoid_draining_ones(two_backends, api):
    Backend.objects.create(name="drain-a", draining=True)
    response = api.post("/api/jobs/", {"workflow": SLEEP_WORKFLOW, "job_type": "image"}, format="json")
    assert response.status_code == 201 and response.json()["backend"] == "drain-b"


def test_new_jobs_go_to_the_least_busy_backend(two_backends):
    JobFactory.create(backend="drain-a", status=JobStatus.RUNNING)
    assert services.backend_choose(None) == "drain-b"
    assert services.backend_choose("drain-a") == "drain-a", "an explicit choice is kept"
