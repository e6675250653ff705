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


def another_value(job: Job, attname: str) -> object:
    """A new value of the column's type, different from the job's."""
    field = next(f for f in Job._meta.concrete_fields if f.attname == attname)
    old = getattr(job, attname)
    kind = field.get_internal_type()
    if kind == "DateTimeField":
        return (old or timezone.now()) + timedelta(seconds=7.5)
    if kind == "FloatField":
        return (old or 0.0) + 0.375
    if kind.endswith("IntegerField"):
        return (old or 0) + 3
    if kind in ("CharField", "TextField"):
        return f"{old}9"
    if kind == "JSONField":
        return [*(old or []), "9"]
    raise AssertionError(f"no new value for {attname} ({kind})")


@pytest.mark.parametrize("column", sorted(live_state.PROGRESS_COLUMNS))
def test_a_tracked_job_shaped_again_after_a_progress_column_changed_shows_what_afresh_shows(column):
    job = running_job()
    shape = live_state.TrackedJobShape()
    assert shape.state(job) == afresh(job)
    nullable = next(f for f in Job._meta.concrete_fields if f.attname == column).null

    for value in [another_value(job, column), *([None] if nullable else [])]:
        setattr(job, column, value)
        with mock.patch.object(live_state, "job_payloads", wraps=live_state.job_payloads) as whole:
            shown = shape.state(job)
        assert not whole.called  # only the progress fields were shaped again
        expected = afresh(job)
        assert shown == expected
        assert list(shown) == list(expected)


def test_a_tracked_job_s_run_time_follows_the_clock():
    job = running_job()
    shape = live_state.TrackedJobShape()
    before = shape.state(job)["run_seconds"]
    with mock.patch("django.utils.timezone.now", return_value=timezone.now() + timedelta(seconds=2)):
        later = shape.state(job)
        assert later == afresh(job)
    assert later["run_seconds"] == before + 2


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("status", JobStatus.COMPLETED),
        ("cancel_requested_at", None),
        ("name", "hero shot, take 2"),
        ("error_message", "KSampler: out of memory"),
        ("backend", "gpu-7"),
    ],
)
def test_a_tracked_job_is_shaped_whole_again_when_anything_else_changed(column, value):
    job = running_job()
    shape = live_state.TrackedJobShape()
    shape.state(job)
    job.step_value = 8.0
    setattr(job, column, value)

    with mock.patch.object(live_state, "job_payloads", wraps=live_state.job_payloads) as whole:
        shown = shape.state(job)

    assert whole.called
    assert shown == afresh(job)
