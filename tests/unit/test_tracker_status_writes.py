"""A status change is stored and sent with what the tracker noted before it: the real tracker in this
process against the simulator on a thread. The browsers hear `completed` in the same message as the
job's last node and its output, every event of the timeline reaches them once and in order, and the
timeline's numbering has no gaps (the tracker's pending events take their seqs in the status
change's own transaction)."""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from devtools.simulator_process import InProcessSimulator
from jobs import selectors, services, tracking
from jobs.models import EventKind, Job, JobEvent, JobStatus
from jobs.progress import JobProgress
from jobs.tracking import job_track
from jobs.tracking.coalescer import Coalescer
from jobs.tracking.timeline import Timeline
from tests.factories import JobFactory

pytestmark = pytest.mark.django_db(transaction=True)  # status changes are published when they commit


@pytest.fixture(autouse=True)
def _system(settings: Any, tmp_path: Path, comfyui_sim: InProcessSimulator) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.COMFYUI_BACKENDS = {"default": comfyui_sim.url}


WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 77}},
    "2": {"class_type": "TestSleep", "inputs": {"value": ["1", 0], "seconds": 0.3}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "writes"}},
}


def test_completed_is_sent_with_the_last_node_and_the_output_and_every_event_once_in_order() -> None:
    job = JobFactory.create(workflow=WORKFLOW)
    sent: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []

    def broadcast(state: dict[str, Any], user_id: int | None, events: Any = (), **_: Any) -> None:
        sent.append((state, list(events)))

    with mock.patch.object(services, "job_broadcast", broadcast):
        job_track(str(job.id))

    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED
    ends = [n for n, (state, _) in enumerate(sent) if state["status"] == JobStatus.COMPLETED]
    final_state, final_events = sent[ends[0]]
    assert final_state["outputs"]
    kinds = [(event["kind"], event["node_id"]) for event in final_events]
    assert ("node_finished", "3") in kinds and (EventKind.OUTPUT, "3") in kinds, kinds
    assert kinds[-1] == (EventKind.STATUS, ""), "the status change comes after what led to it"
    # Then once more, the output's thumbnail made (after the end was sent), as a newer version.
    assert len(ends) == 2 and ends[1] == len(sent) - 1 and not sent[-1][1]
    assert final_state["outputs"][0]["thumbnail_url"] is None and sent[-1][0]["outputs"][0]["thumbnail_url"]
    assert sent[-1][0]["version"] > final_state["version"]

    stored = list(JobEvent.objects.filter(job=job).order_by("seq").values_list("seq", flat=True))
    assert stored == list(range(1, len(stored) + 1)) and job.seq == stored[-1]
    assert [event["seq"] for _, events in sent for event in events] == stored


@pytest.mark.parametrize("requeued", [True, False], ids=["requeued-and-taken-again", "same-attempt"])
def test_a_tracker_that_lost_its_job_closes_nothing_and_writes_only_into_its_own_attempt(requeued: bool) -> None:
    """A tracker whose job a sweep requeued (a new prompt) and another tracker runs again: its close
    fails and what it noted stays out of the new attempt's timeline. One whose compare-and-set lost
    while the job is still in its attempt keeps what it noted, as its own write would."""
    job = JobFactory.create(workflow=WORKFLOW, status=JobStatus.RUNNING, seq=3)
    ours = job.prompt_id
    progress = JobProgress(prompt_id=str(ours), workflow=WORKFLOW)
    timeline = Timeline(job, progress, prompt_id=str(ours))
    coalescer = Coalescer(job, progress, {}, timeline)
    timeline.event(EventKind.NOTE, data={"message": "noted by the first tracker"})

    moved_on = {"status": JobStatus.SUBMITTED, "attempt": 2}
    if requeued:
        moved_on["prompt_id"] = uuid.uuid4()
    Job.objects.filter(pk=job.pk).update(**moved_on)  # behind this tracker's back
    with mock.patch.object(services, "job_broadcast"):
        assert coalescer.close(JobStatus.COMPLETED) is False

    job.refresh_from_db()
    assert job.status == JobStatus.SUBMITTED
    notes = list(JobEvent.objects.filter(job=job, kind=EventKind.NOTE).values_list("data__message", flat=True))
    assert notes == ([] if requeued else ["noted by the first tracker"])


def test_a_batch_s_outputs_are_read_once_and_its_end_lists_every_one_as_rest_does() -> None:
    batch: dict[str, Any] = copy.deepcopy(WORKFLOW)
    batch["1"]["inputs"]["batch_size"] = 3
    job = JobFactory.create(workflow=batch)
    sent: list[dict[str, Any]] = []

    def broadcast(state: dict[str, Any], user_id: int | None, events: Any = (), **_: Any) -> None:
        sent.append(state)

    with (
        mock.patch.object(services, "job_broadcast", broadcast),
        CaptureQueriesContext(connection) as queries,
    ):
        job_track(str(job.id))

    reads = [q["sql"] for q in queries.captured_queries if q["sql"].startswith('SELECT "jobs_joboutput"')]
    assert len(reads) == 1, reads  # not one a file, nor one each time the job is shaped
    ends = [state for state in sent if state["status"] == JobStatus.COMPLETED]
    rest = selectors.job_state(Job.objects.get(pk=job.pk))
    assert len(rest["outputs"]) == 3
    assert [o["id"] for o in ends[0]["outputs"]] == [o["id"] for o in rest["outputs"]]
    assert ends[-1]["outputs"] == rest["outputs"]  # with the thumbnails made after the end was sent
    assert all(o["thumbnail_url"] for o in rest["outputs"])


def test_a_job_on_its_first_delivery_stores_its_outputs_without_reading_them_and_releases_no_asset() -> None:
    # A backend's own take binds it to a GPU for the first time: it can have no outputs yet, and its
    # workflow names no asset (job_create recorded none): two statements less on the way to `completed`.
    batch: dict[str, Any] = copy.deepcopy(WORKFLOW)
    batch["1"]["inputs"]["batch_size"] = 3
    job = services.job_create(user=None, workflow=batch, job_type="image")

    with CaptureQueriesContext(connection) as queries:
        assert tracking.backend_work("default") == 1

    statements = [q["sql"] for q in queries.captured_queries]
    assert not [sql for sql in statements if sql.startswith('SELECT "jobs_joboutput"')]
    assert not [sql for sql in statements if sql.startswith('UPDATE "assets_assetuse"')]
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED, job.error_message
    assert job.outputs.count() == 3
