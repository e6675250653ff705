"""The object store down while a finished job's outputs are fetched (issue 14, part 6): the tracker
retries storing with backoff and the job stays running meanwhile; a store back in time means the job
completes with every output; a store that stays down past STORAGE_RETRY_SECONDS fails the job
`storage_unavailable`, naming the outputs left in ComfyUI, with nothing half-recorded: every output
row has its object, and no object lacks its row. The store is moto's S3 server, really stopped."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from jobs.models import EventKind, FailureCategory, Job, JobStatus
from jobs.tracking import job_track
from tests.hostile_comfyui import image_outputs
from tests.media_files import png
from tests.object_store_server import ObjectStoreServer, bucket_create, bucket_keys, storages_setting
from tests.unit.test_hostile_comfyui_outputs import notes, tracked

pytestmark = pytest.mark.django_db

NAMES = ["a.png", "b.png", "c.png"]
FILES = {name: png(16 + i, 16) for i, name in enumerate(NAMES)}


@pytest.fixture
def object_store() -> Iterator[ObjectStoreServer]:
    server = ObjectStoreServer().start()
    yield server
    server.stop()


@pytest.fixture
def bucket(settings: Any, object_store: ObjectStoreServer, tmp_path: Path) -> str:
    name = bucket_create(object_store.endpoint)
    settings.STORAGES = storages_setting(object_store.endpoint, name)
    settings.AWS_STORAGE_BUCKET_NAME = name
    return name


def stopping_store_at(server: ObjectStoreServer, content: bytes, *, back_after: float | None) -> Callable[[], Any]:
    """A /view body that takes the store down just before ComfyUI sends it (and, with `back_after`,
    brings the store back that many seconds later, on a thread of its own)."""

    stopped = threading.Event()

    async def view() -> AsyncIterator[bytes]:
        if not stopped.is_set():  # once: a fetch after the store came back must find it up
            stopped.set()
            await asyncio.to_thread(server.stop)
            if back_after is not None:
                threading.Timer(back_after, server.start).start()
        yield content

    return view


def assert_nothing_half_recorded(job: Job, endpoint: str, bucket: str) -> None:
    keys = set(bucket_keys(endpoint, bucket))
    rows = {o.file.name for o in job.outputs.all()} | {o.thumbnail.name for o in job.outputs.all() if o.thumbnail}
    assert rows == keys, "each output row has its object and each object its row"


def test_a_store_back_in_time_completes_the_job_with_every_output(hostile_comfyui, bucket, object_store, settings):
    settings.STORAGE_RETRY_SECONDS = 20
    files = {**FILES, "b.png": stopping_store_at(object_store, FILES["b.png"], back_after=3.0)}
    started = time.monotonic()
    job = tracked(hostile_comfyui, image_outputs("9", NAMES), files)
    took = time.monotonic() - started

    assert job.status == JobStatus.COMPLETED, job.error_message
    assert sorted(o.comfy_filename for o in job.outputs.all()) == NAMES, "all outputs, none twice"
    assert hostile_comfyui.views.count("b.png") >= 2, "fetched again from ComfyUI after the store came back"
    assert took >= 3.0, "the job did not complete before its outputs were stored"
    retries = notes(job, "storage_retry")
    assert len(retries) == 1 and "b.png" in retries[0]["message"]
    assert_nothing_half_recorded(job, object_store.endpoint, bucket)


def test_a_store_that_stays_down_fails_the_job_storage_unavailable_and_loses_nothing(
    hostile_comfyui, bucket, object_store, settings
):
    settings.STORAGE_RETRY_SECONDS = 3
    files = {**FILES, "b.png": stopping_store_at(object_store, FILES["b.png"], back_after=None)}
    started = time.monotonic()
    job = tracked(hostile_comfyui, image_outputs("9", NAMES), files)
    took = time.monotonic() - started

    assert job.status == JobStatus.FAILED
    assert job.failure_category == FailureCategory.STORAGE_UNAVAILABLE
    assert "2 of 3 outputs could not be stored" in job.error_message
    assert [o.comfy_filename for o in job.outputs.all()] == ["a.png"], "what was stored stays"
    unstored = job.error_details["unstored"]
    assert any("b.png" in item for item in unstored) and any("c.png" in item for item in unstored), (
        "the outputs left in ComfyUI are named"
    )
    assert hostile_comfyui.views.count("c.png") == 0, "not tried again once the store stayed down"
    assert 3.0 <= took < 30, "bounded by STORAGE_RETRY_SECONDS"
    skipped = notes(job, "storage_unavailable")
    assert {n["output_skipped"].split()[-1] for n in skipped} == {"b.png", "c.png"}
    assert job.events.filter(kind=EventKind.ERROR).count() == 1

    object_store.start()
    assert_nothing_half_recorded(job, object_store.endpoint, bucket)


def test_an_input_the_store_cannot_give_fails_storage_unavailable_before_comfyui_sees_the_job(
    bucket, object_store, settings, api, user, comfyui_sim
):
    from tests.media_files import asset_of
    from tests.unit.test_input_assets_tracking import keyframe_workflow, submitted

    settings.COMFYUI_BACKENDS = {"default": comfyui_sim.url}
    settings.STORAGE_RETRY_SECONDS = 2
    asset = asset_of(user, png(20, 10), "keyframe.png")
    job = submitted(api, keyframe_workflow(asset))
    object_store.stop()
    job_track(str(job.id))
    job.refresh_from_db()

    assert job.status == JobStatus.FAILED and job.failure_category == FailureCategory.STORAGE_UNAVAILABLE
    assert f"asset:{asset.id}" in job.error_message and "file store" in job.error_message
    assert requests.get(f"{comfyui_sim.url}/sim/submissions", timeout=5).json() == [], "no prompt reached ComfyUI"


def test_a_preview_the_store_cannot_keep_costs_that_frame_only(bucket, object_store, user):
    from comfyui import PreviewFrame
    from jobs.progress import JobProgress
    from jobs.tracking.timeline import Timeline
    from tests.factories import JobFactory
    from tests.hostile_comfyui import PNG_1PX

    job = JobFactory.create(user=user, status=JobStatus.RUNNING)
    timeline = Timeline(job, JobProgress(prompt_id=str(job.id), workflow=job.workflow), prompt_id=str(job.id))
    object_store.stop()
    assert timeline.keep_preview(PreviewFrame(image=PNG_1PX, media_type="image/png")) is False
    object_store.start()
    timeline.last_preview = 0.0
    assert timeline.keep_preview(PreviewFrame(image=PNG_1PX, media_type="image/png")) is True
