"""The job row's frequent writes are one statement each: the tracker's progress write also tells
it what it must know of the job (its timeline's seq, a cancel asked for), so the watchdog need not
read the job again; a status change returns its seq."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from comfyui import ComfyUIClient
from jobs import services
from jobs.models import EventKind, Job, JobEvent, JobStatus
from jobs.progress import JobProgress
from jobs.tracking.coalescer import Coalescer
from jobs.tracking.ending import JobEnding
from jobs.tracking.timeline import Timeline
from jobs.tracking.watchdog import Watchdog
from tests.factories import JobFactory

pytestmark = pytest.mark.django_db

WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 1}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "w"}},
}


def test_progress_alone_is_stored_in_one_statement_that_returns_the_seq_and_a_cancel() -> None:
    job = JobFactory.create(workflow=WORKFLOW, status=JobStatus.RUNNING, seq=4)
    Job.objects.filter(pk=job.pk).update(seq=6)  # an event stored by someone else meanwhile
    finish_at = timezone.now() + timedelta(seconds=42)
    job.progress, job.cached_nodes, job.current_node_name, job.eta_finish_at = 0.5, ["1"], "Sampler ☃", finish_at
    job.step_value, job.step_max, job.version = 3, 20, 9

    with CaptureQueriesContext(connection) as queries:
        saved = services.job_progress_save(job)
    assert len(queries) == 1
    assert saved is not None and saved.seq == 6 == job.seq and not saved.cancel_requested
    stored = Job.objects.get(pk=job.pk)
    assert (stored.progress, stored.cached_nodes, stored.current_node_name) == (0.5, ["1"], "Sampler ☃")
    assert (stored.eta_finish_at, stored.step_value, stored.step_max, stored.version) == (finish_at, 3, 20, 9)
    assert stored.heartbeat_at == job.heartbeat_at

    Job.objects.filter(pk=job.pk).update(cancel_requested_at=timezone.now())
    saved = services.job_progress_save(job)
    assert saved is not None and saved.cancel_requested


def test_events_are_numbered_after_the_seq_the_write_returned() -> None:
    job = JobFactory.create(workflow=WORKFLOW, status=JobStatus.RUNNING)
    Job.objects.filter(pk=job.pk).update(seq=2)
    events = [JobEvent(job=job, kind=EventKind.NOTE, at=timezone.now(), data={"message": str(n)}) for n in range(3)]
    saved = services.job_progress_save(job, events)
    assert saved is not None and saved.seq == 5 == job.seq
    assert list(JobEvent.objects.filter(job=job).values_list("seq", flat=True)) == [3, 4, 5]


@pytest.mark.parametrize("moved", ["finished", "requeued"])
def test_a_job_no_longer_in_this_attempt_is_left_alone(moved: str) -> None:
    job = JobFactory.create(workflow=WORKFLOW, status=JobStatus.RUNNING)
    change: dict[str, Any] = (
        {"status": JobStatus.COMPLETED} if moved == "finished" else {"prompt_id": uuid.uuid4(), "attempt": 2}
    )
    Job.objects.filter(pk=job.pk).update(**change)
    job.progress = 0.7
    events = [JobEvent(job=job, kind=EventKind.NOTE, at=timezone.now(), data={"message": "late"})]
    assert services.job_progress_save(job, events) is None
    assert Job.objects.get(pk=job.pk).progress == 0.0 and not JobEvent.objects.filter(job=job).exists()


def tracker_parts(job: Job) -> tuple[Coalescer, Watchdog, mock.Mock]:
    prompt_id = str(job.prompt_id)
    progress = JobProgress(prompt_id=prompt_id, workflow=WORKFLOW)
    timeline = Timeline(job, progress, prompt_id=prompt_id)
    coalescer = Coalescer(job, progress, {}, timeline)
    client = mock.Mock(spec=ComfyUIClient)
    client.queue.return_value.position.return_value = "running"
    ending = JobEnding(job, client, prompt_id=prompt_id, progress=progress, timeline=timeline, coalescer=coalescer)
    watchdog = Watchdog(
        job,
        client,
        prompt_id=prompt_id,
        progress=progress,
        estimates={},
        timeline=timeline,
        coalescer=coalescer,
        ending=ending,
    )
    return coalescer, watchdog, client


def test_a_cancel_is_learned_from_the_progress_write_and_the_prompt_interrupted_without_a_read() -> None:
    job = JobFactory.create(workflow=WORKFLOW, status=JobStatus.RUNNING)
    coalescer, watchdog, client = tracker_parts(job)
    Job.objects.filter(pk=job.pk).update(cancel_requested_at=timezone.now())  # a user's cancel
    coalescer.mark_changed()
    coalescer.flush_if_due()  # the progress write, due since nothing was written yet

    with CaptureQueriesContext(connection) as queries:
        watchdog.check_db_if_due()
    assert len(queries) == 0
    client.interrupt.assert_called_once_with(str(job.prompt_id))


def test_with_no_recent_progress_write_the_watchdog_reads_the_job_itself(settings: Any) -> None:
    job = JobFactory.create(workflow=WORKFLOW, status=JobStatus.RUNNING)
    coalescer, watchdog, client = tracker_parts(job)
    coalescer.mark_changed()
    coalescer.flush_if_due()
    settings.TRACKER_DB_INTERVAL = 0.0  # that write is already too old to tell
    Job.objects.filter(pk=job.pk).update(cancel_requested_at=timezone.now())

    with CaptureQueriesContext(connection) as queries:
        watchdog.check_db_if_due()
    assert len(queries) == 1
    client.interrupt.assert_called_once_with(str(job.prompt_id))


@pytest.mark.django_db(transaction=True)  # the close's own transaction, as in production: no test transaction around it
def test_a_close_is_one_transaction_whose_status_change_returns_its_seq_without_a_savepoint() -> None:
    job = JobFactory.create(workflow=WORKFLOW, status=JobStatus.RUNNING)
    Job.objects.filter(pk=job.pk).update(seq=5)  # events stored by others meanwhile
    with CaptureQueriesContext(connection) as queries:
        assert services.job_close(job, JobStatus.COMPLETED)
    statements = [query["sql"] for query in queries]
    assert not [sql for sql in statements if "SAVEPOINT" in sql], statements
    assert not [sql for sql in statements if sql.startswith('SELECT "jobs_job"."seq"')], statements
    stored = Job.objects.get(pk=job.pk)
    assert stored.status == JobStatus.COMPLETED and job.seq == stored.seq == 6
    assert list(JobEvent.objects.filter(job=job).values_list("seq", "kind")) == [(6, EventKind.STATUS)]


def test_a_status_change_someone_else_made_first_is_refused_and_the_job_read_again() -> None:
    job = JobFactory.create(workflow=WORKFLOW, status=JobStatus.RUNNING)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.FAILED)
    assert not services.job_transition(job, JobStatus.COMPLETED, expected=JobStatus.RUNNING)
    assert job.status == JobStatus.FAILED == Job.objects.get(pk=job.pk).status
    assert not JobEvent.objects.filter(job=job).exists()


def test_a_status_change_of_a_job_read_with_only_fills_in_the_rest_as_the_orm_reads_it() -> None:
    # A take reads its candidates with only() and moves the one it binds: the rest of the row comes
    # back with the update, converted as a full read converts it (JSON, UUIDs, dates, foreign keys).
    earlier = JobFactory.create(workflow=WORKFLOW, status=JobStatus.FAILED)
    made = JobFactory.create(
        workflow=WORKFLOW, status=JobStatus.QUEUED, name="shot 12 ☃", tags=["a", "b"], retry_of=earlier
    )
    Job.objects.filter(pk=made.pk).update(eta_finish_at=timezone.now() + timedelta(seconds=7))
    job = Job.objects.only("id", "version", "deliveries").get(pk=made.pk)

    with CaptureQueriesContext(connection) as queries:
        assert services.job_transition(job, JobStatus.SUBMITTED, expected=JobStatus.QUEUED, backend="gpu-a")
    assert not job.get_deferred_fields()
    statements = [query["sql"].split()[0] for query in queries]
    assert [word for word in statements if word in ("SELECT", "UPDATE", "INSERT")] == ["UPDATE", "INSERT"]

    full = Job.objects.get(pk=made.pk)
    for field in Job._meta.concrete_fields:
        assert getattr(job, field.attname) == getattr(full, field.attname), field.attname
    assert isinstance(job.workflow, dict) and isinstance(job.prompt_id, uuid.UUID)
