"""What ComfyUI returns is untrusted (issue 11), on real parts: a Celery GPU worker process follows
jobs on a hostile ComfyUI (tests/hostile_comfyui.py, served from this process), on the test
database (PostgreSQL in CI, which refuses NUL and over-long values) and the real Redis."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from jobs import services
from jobs.models import EventKind, FailureCategory, Job, JobStatus
from tests.conftest import wait_for
from tests.factories import SLEEP_WORKFLOW
from tests.hostile_comfyui import (
    HTML_WITH_SCRIPT,
    PNG_1PX,
    SVG_WITH_SCRIPT,
    HostileComfyUI,
    history_entry,
    image_outputs,
)
from tests.system import CeleryWorker, database_url_for_subprocess

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

BACKEND = f"hostile{os.getpid()}"
MIB = 1024 * 1024
SANDBOX = "sandbox; default-src 'none'"
MP4_HEAD = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"


@pytest.fixture(scope="module")
def hostile_system(
    redis_of_this_run: None, django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[HostileComfyUI, CeleryWorker]]:
    """A hostile ComfyUI and a GPU worker for it, with an output cap of 1 MiB."""
    comfyui = HostileComfyUI().start()
    media_root = tmp_path_factory.mktemp("hostile-media")
    with django_db_blocker.unblock():
        database_url = database_url_for_subprocess()
    env = dict(
        os.environ,
        DATABASE_URL=database_url,
        COMFYUI_BACKENDS=f"{BACKEND}={comfyui.url}",
        COMFYUI_DEFAULT_BACKEND=BACKEND,
        MEDIA_ROOT=str(media_root),
        JOB_OUTPUT_MAX_BYTES=str(MIB),
        TRACKER_RECONNECT_SECONDS="5",
        PYTHONUNBUFFERED="1",
    )
    env.pop("COMFYUI_URL", None)
    worker = CeleryWorker(
        queue=f"gpu.{BACKEND}", env=env, log_path=tmp_path_factory.mktemp("logs") / "hostile-worker.log"
    )
    worker.media_root = media_root
    worker.start()
    try:
        yield comfyui, worker
    finally:
        worker.stop()
        comfyui.stop()


@pytest.fixture
def hostile(hostile_system, settings) -> Iterator[HostileComfyUI]:
    comfyui, worker = hostile_system
    settings.COMFYUI_BACKENDS = {BACKEND: comfyui.url}
    settings.MEDIA_ROOT = worker.media_root
    comfyui.entry, comfyui.files, comfyui.redirects, comfyui.views = None, {}, {}, []
    yield comfyui


def run(user: Any) -> Job:
    """A job for the hostile backend, sent to its worker, followed to its end."""
    job = services.job_create(user=user, workflow=SLEEP_WORKFLOW, job_type="image", backend=BACKEND)

    def final() -> bool:
        job.refresh_from_db()
        return job.is_final

    wait_for(final, timeout=60, message=f"job {job.id} to end")
    return job


def test_hostile_outputs_are_stored_by_their_bytes_and_bounded(hostile, user, api, settings):
    async def two_mib() -> AsyncIterator[bytes]:
        yield MP4_HEAD + bytes(MIB - len(MP4_HEAD))
        yield bytes(MIB)

    outputs = image_outputs("9", ["x\x00.html", "x.svg", "ok.png"])
    outputs["9"]["videos"] = [{"filename": "long.mp4", "subfolder": "", "type": "output"}]
    outputs["n" * 80] = image_outputs("x", ["far.png"])["x"]  # a node id longer than its column
    hostile.entry = history_entry(outputs)
    hostile.files = {
        "x.html": HTML_WITH_SCRIPT,
        "x.svg": SVG_WITH_SCRIPT,
        "ok.png": PNG_1PX,
        "far.png": PNG_1PX,
        "long.mp4": two_mib,
    }
    job = run(user)

    assert job.status == JobStatus.COMPLETED, job.error_message
    stored = {o.comfy_filename: o for o in job.outputs.all()}
    assert set(stored) == {"x.html", "x.svg", "ok.png", "far.png"}
    assert stored["x.html"].media_type == stored["x.svg"].media_type == "application/octet-stream"
    assert stored["ok.png"].media_type == "image/png"
    (too_large,) = [e.data for e in job.events.filter(kind=EventKind.NOTE) if e.data.get("reason") == "too_large"]
    assert "long.mp4" in too_large["output_skipped"]
    files = sorted(p.suffix for p in Path(settings.MEDIA_ROOT, "outputs", str(job.id)).iterdir())
    assert files == [".bin", ".bin", ".png", ".png"], "nothing of the cut-off video is left in storage"

    for name, expected in [("x.html", HTML_WITH_SCRIPT), ("x.svg", SVG_WITH_SCRIPT)]:
        response = api.get(f"/api/jobs/{job.id}/outputs/{stored[name].pk}/")
        assert response["Content-Type"] == "application/octet-stream"
        assert response["Content-Disposition"].startswith("attachment;")
        assert response["X-Content-Type-Options"] == "nosniff" and response["Content-Security-Policy"] == SANDBOX
        assert b"".join(response.streaming_content) == expected


def test_a_history_of_a_hostile_shape_ends_the_job_and_the_worker_goes_on(hostile, hostile_system, user):
    _, worker = hostile_system
    hostile.entry = {"outputs": ["not", "a", "mapping"], "status": "success"}
    broken = run(user)

    # Nothing readable came back: no status, no outputs. The job ends, saying so, never stuck.
    assert broken.status == JobStatus.FAILED
    assert "without saying why" in broken.error_message
    assert worker.alive()

    hostile.entry = history_entry(image_outputs("9", ["next.png"]))
    hostile.files = {"next.png": PNG_1PX}
    assert run(user).status == JobStatus.COMPLETED, "the worker follows the next job as usual"


def test_huge_comfyui_error_keeps_the_job_detail_small(hostile, user, api):
    error = {
        "node_id": "5\x00",
        "node_type": "KSampler",
        "exception_type": "RuntimeError",
        "exception_message": "boom \x00" + "m" * (5 * MIB),
        "traceback": ["Traceback (most recent call last):\n", *["  frame\x00\n"] * 1_000_000, "RuntimeError\n"],
    }
    hostile.entry = history_entry(status="error", messages=[["execution_error", error]])
    job = run(user)

    assert job.status == JobStatus.FAILED and job.failure_category == FailureCategory.NODE_ERROR
    response = api.get(f"/api/jobs/{job.id}/")
    assert len(response.content) < 100_000, f"job detail is {len(response.content)} bytes"
    body = response.json()["error"]
    assert body["message"].startswith("KSampler #5: RuntimeError: boom mmm")
    details = body["details"]
    assert details["traceback"][0].startswith("Traceback") and details["traceback"][-1] == "RuntimeError\n"
    assert details["truncated"] is True and "\\u0000" not in response.content.decode()
