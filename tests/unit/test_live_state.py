"""Jobs shaped through serializers kept between calls (jobs.live_state, behind selectors.job_states:
REST, websocket snapshots, the tracker's broadcasts) are exactly what a JobSerializer built afresh
shows: the same fields, values and order, for jobs in every state, one after another through the
same kept serializer."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from jobs import live_state, selectors
from jobs.models import EventKind, FailureCategory, Job, JobEvent, JobGroup, JobOutput, JobStatus
from jobs.serializers import JobEventSerializer, JobSerializer
from tests.factories import JobFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _clock_stopped() -> Iterator[None]:
    # A running job's run_seconds and a waiting one's estimate are counted to "now": one now for both.
    with mock.patch("django.utils.timezone.now", return_value=timezone.now()):
        yield


def running_job():
    now = timezone.now()
    return JobFactory(
        status=JobStatus.RUNNING,
        submitted_at=now - timedelta(seconds=5),
        started_at=now - timedelta(seconds=4),
        current_node_id="2",
        current_node_class="TestSleep",
        current_node_name="Test Sleep",
        current_node_category="_for_testing",
        step_value=7.0,
        step_max=20.0,
        nodes_total=3,
        nodes_done=1,
        cached_nodes=["1"],
        progress=0.42,
        eta_finish_at=now + timedelta(seconds=9),
        preview_at=now,
        seq=12,
        version=1_700_000_000_000_000,
        name="hero shot",
        project="pilot",
        shot="sh010",
        tags=["wip", "hero"],
        template_name="portrait",
        template_version=3,
        cancel_requested_at=now,
    )


def failed_job():
    return JobFactory(
        status=JobStatus.FAILED,
        finished_at=timezone.now(),
        failure_category=FailureCategory.NODE_ERROR,
        error_message="KSampler: boom",
        error_details={"node_id": "2", "exception_type": "RuntimeError"},
        group=JobGroup.objects.create(name="batch"),
    )


def completed_job() -> Job:
    job = JobFactory.create(status=JobStatus.COMPLETED, finished_at=timezone.now(), progress=1.0)
    JobOutput.objects.create(
        job=job, node_id="3", kind="images", comfy_filename="out_00001_.png", media_type="image/png", size_bytes=42
    )
    return job


def waiting_jobs():
    """Two jobs waiting for the same backend: the second has a place and an estimate to show."""
    JobFactory(status=JobStatus.QUEUED, priority=9)
    return JobFactory(status=JobStatus.QUEUED, priority=5, retry_of=JobFactory(status=JobStatus.FAILED))


def afresh(job: Job) -> dict:
    """The job as a serializer built for it alone shows it."""
    return dict(JobSerializer(job, context={"queue_places": selectors.queue_places([job])}).data)


@pytest.mark.parametrize("make_job", [running_job, failed_job, completed_job, waiting_jobs])
def test_a_kept_serializer_shows_what_one_built_afresh_shows(make_job):
    job = make_job()

    shown = selectors.job_state(job)

    expected = afresh(job)
    assert shown == expected
    assert list(shown) == list(expected)


def test_one_kept_serializer_shows_each_job_its_own_way():
    first, second, third = running_job(), failed_job(), completed_job()

    shown = [selectors.job_state(job) for job in (first, second, third, first)]
    listed = selectors.job_states([first, second, third, first])

    assert shown == listed == [afresh(job) for job in (first, second, third, first)]
    assert shown[1]["error"]["category"] == FailureCategory.NODE_ERROR
    assert shown[3]["current_node"]["name"] == "Test Sleep"


def test_live_events_are_the_rest_events():
    job = running_job()
    events = [
        JobEvent.objects.create(job=job, seq=1, kind=EventKind.NODE_STARTED, at=timezone.now(), node_id="2"),
        JobEvent.objects.create(
            job=job, seq=2, kind=EventKind.STEPS, at=timezone.now(), node_id="2", data={"value": 3, "max": 20}
        ),
    ]

    assert live_state.live_event_payloads(events) == list(JobEventSerializer(events, many=True).data)
    assert live_state.live_event_payloads([]) == []


def test_a_waiting_job_shows_its_place():
    assert selectors.job_state(waiting_jobs())["queue_position"] == 2
