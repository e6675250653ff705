"""The object store down while a job's outputs are fetched (issue 14, part 6), on real processes: a GPU
worker storing to moto's S3 server (a process of its own), which the test stops while the job runs.
Back in time: the job completes with its output, the attempt and the prompt once. Down for good: the
job fails `storage_unavailable` after STORAGE_RETRY_SECONDS, its output named, no row without its
object. The figures go to test-artifacts/object-store-faults.txt and the README's fault matrix."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobs.models import EventKind, Job
from tests.conftest import wait_for
from tests.integration.test_job_lifecycle import sleep_workflow, submit, wait_final
from tests.object_store_server import (
    MotoProcess,
    bucket_create,
    bucket_keys,
    process_environment,
    storages_setting,
)
from tests.system import ARTIFACTS, CeleryWorker, database_url_for_subprocess

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

BACKEND = "s3fault"  # a backend of this test's own: no other test's worker serves its queue
RETRY_SECONDS = 8
NODE_SECONDS = 2.0


@pytest.fixture
def store_and_worker(
    redis_of_this_run: None, simulator_session: Any, django_db_blocker: Any, settings: Any, tmp_path: Path
) -> Iterator[dict[str, Any]]:
    store = MotoProcess(tmp_path).start()
    bucket = bucket_create(store.endpoint)
    with django_db_blocker.unblock():
        database_url = database_url_for_subprocess()
    env = dict(
        os.environ,
        DATABASE_URL=database_url,
        COMFYUI_BACKENDS=f"{BACKEND}={simulator_session.url}",
        COMFYUI_DEFAULT_BACKEND=BACKEND,
        STORAGE_RETRY_SECONDS=str(RETRY_SECONDS),
        MEDIA_ROOT=str(tmp_path / "worker-media"),
        PYTHONUNBUFFERED="1",
        **process_environment(store.endpoint, bucket),
    )
    worker = CeleryWorker(
        queue=f"gpu.{BACKEND}", env=env, log_path=tmp_path / "gpu-worker.log", name=f"s3f-{os.getpid()}"
    )
    settings.COMFYUI_BACKENDS = {BACKEND: simulator_session.url}
    settings.COMFYUI_DEFAULT_BACKEND = BACKEND
    settings.STORAGES = storages_setting(store.endpoint, bucket)
    worker.start()
    try:
        yield {"store": store, "bucket": bucket, "worker": worker}
    finally:
        worker.stop()
        store.stop()


def store_down_while_outputs_are_fetched(api: Any, store: MotoProcess, bucket: str, *, down_for: float | None) -> Any:
    """Submit a job, stop the store while its node runs, bring it back (empty, the bucket made again)
    after `down_for` seconds or never; the job's final state and the seconds from stop to final."""
    job = submit(api, sleep_workflow(NODE_SECONDS, prefix="store_fault"))
    wait_for(lambda: api.get(f"/api/jobs/{job['id']}/").json()["status"] == "running", message="job running")
    store.stop()
    stopped = time.monotonic()
    if down_for is not None:
        time.sleep(down_for)
        store.start()
        bucket_create(store.endpoint, bucket)
    done = wait_final(api, job["id"], timeout=60)
    return done, time.monotonic() - stopped


def record(line: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with (ARTIFACTS / "object-store-faults.txt").open("a") as out:
        out.write(line + "\n")
    print(line)


def test_a_store_back_in_time_the_job_completes_with_its_output(store_and_worker: dict[str, Any], api: Any) -> None:
    store, bucket = store_and_worker["store"], store_and_worker["bucket"]
    down_for = 4.0
    done, took = store_down_while_outputs_are_fetched(api, store, bucket, down_for=down_for)

    assert done["status"] == "completed", done
    assert len(done["outputs"]) == 1
    job = Job.objects.get(pk=done["id"])
    key = job.outputs.get().file.name
    assert key in bucket_keys(store.endpoint, bucket), "the output is in the store"
    assert job.attempts.count() == 1, "one attempt, one prompt"
    retried = [e for e in job.events.filter(kind=EventKind.NOTE) if e.data.get("reason") == "storage_retry"]
    assert len(retried) == 1
    download = api.get(f"/api/jobs/{job.id}/outputs/{job.outputs.get().pk}/")
    assert download.status_code == 200 and b"".join(download.streaming_content).startswith(b"\x89PNG")
    record(
        f"store down {down_for:.1f} s while the {NODE_SECONDS:.0f} s node ran: completed {took:.1f} s after the "
        f"store went down, 1 attempt, {len(done['outputs'])} output, {len(retried)} retry note"
    )


def test_a_store_that_stays_down_fails_the_job_storage_unavailable(store_and_worker: dict[str, Any], api: Any) -> None:
    store, bucket = store_and_worker["store"], store_and_worker["bucket"]
    done, took = store_down_while_outputs_are_fetched(api, store, bucket, down_for=None)

    assert done["status"] == "failed" and done["failure_category"] == "storage_unavailable", done
    job = Job.objects.get(pk=done["id"])
    assert "1 of 1 outputs could not be stored" in job.error_message
    assert len(job.error_details["unstored"]) == 1, "the output left in ComfyUI is named"
    assert job.outputs.count() == 0, "no row without its object"
    assert took >= RETRY_SECONDS
    store.start()
    bucket_create(store.endpoint, bucket)
    assert bucket_keys(store.endpoint, bucket) == []
    record(
        f"store down for good: failed storage_unavailable {took:.1f} s after the store went down "
        f"(STORAGE_RETRY_SECONDS={RETRY_SECONDS}), 0 outputs recorded, the unstored one named"
    )
