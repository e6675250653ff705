"""No shared disk (issue 14, part 1): a GPU worker started in an empty working directory of its own,
with a MEDIA_ROOT nobody else has, stores a job's outputs in an S3-compatible store (moto's S3 server,
a process of its own); the web server, another process with another empty MEDIA_ROOT, serves them to
the job's owner (whole, and by range) and to nobody else. Neither process writes a file to its disk."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from access.access_log import web_server_argv
from devtools.processes import Process, free_port
from tests.factories import UserFactory, api_key_for
from tests.object_store_server import bucket_create, bucket_keys, moto_server_process, process_environment, s3_client
from tests.system import CeleryWorker, database_url_for_subprocess
from tests.workflows import text_to_image

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

BACKEND = "s3gpu"  # a backend of this test's own: no other test's worker serves its queue


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.fixture
def fleet_without_shared_disk(
    simulator_session: Any, django_db_blocker: Any, tmp_path: Path
) -> Iterator[dict[str, Any]]:
    with moto_server_process(tmp_path) as endpoint:
        bucket = bucket_create(endpoint)
        with django_db_blocker.unblock():
            database_url = database_url_for_subprocess()
        common = dict(
            os.environ,
            DATABASE_URL=database_url,
            COMFYUI_BACKENDS=f"{BACKEND}={simulator_session.url}",
            COMFYUI_DEFAULT_BACKEND=BACKEND,
            PYTHONUNBUFFERED="1",
            **process_environment(endpoint, bucket),
        )
        places = {name: tmp_path / name for name in ("worker-cwd", "worker-media", "web-media")}
        for place in places.values():
            place.mkdir()
        worker = CeleryWorker(
            queue=f"gpu.{BACKEND}",
            env={**common, "MEDIA_ROOT": str(places["worker-media"])},
            log_path=tmp_path / "gpu-worker.log",
            name=f"s3-{os.getpid()}",
        )
        worker.process.cwd = places["worker-cwd"]
        port = free_port()
        web = Process(
            web_server_argv("127.0.0.1", port),
            env={**common, "MEDIA_ROOT": str(places["web-media"])},
            log_path=tmp_path / "web.log",
            name="daphne (S3)",
        )
        url = f"http://127.0.0.1:{port}"
        worker.start()
        try:
            web.start().wait_for_url(f"{url}/admin/login/", timeout=60)
            try:
                yield {"url": url, "endpoint": endpoint, "bucket": bucket, **places}
            finally:
                web.stop(grace=15)
        finally:
            worker.stop()


def test_outputs_stored_by_a_worker_without_the_web_servers_disk_are_served_by_the_web_server(
    fleet_without_shared_disk: dict[str, Any],
) -> None:
    fleet = fleet_without_shared_disk
    owner, stranger = UserFactory.create(), UserFactory.create()
    headers = {"Authorization": f"Bearer {api_key_for(owner)}"}
    # A seed of this run's own, so ComfyUI's cache never serves this job from an earlier one.
    workflow = text_to_image(seed=time.monotonic_ns() % 100_000, prefix="s3_fleet")
    created = requests.post(
        f"{fleet['url']}/api/jobs/", json={"workflow": workflow, "job_type": "image"}, headers=headers, timeout=10
    )
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]

    deadline = time.monotonic() + 90
    while True:
        job = requests.get(f"{fleet['url']}/api/jobs/{job_id}/", headers=headers, timeout=10).json()
        if job["status"] in ("completed", "failed", "cancelled") or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert job["status"] == "completed", job
    (output,) = job["outputs"]

    keys = bucket_keys(fleet["endpoint"], fleet["bucket"])
    assert any(key.startswith(f"outputs/{job_id}/") for key in keys), keys
    key = next(key for key in keys if key.startswith(f"outputs/{job_id}/"))
    stored = s3_client(fleet["endpoint"]).get_object(Bucket=fleet["bucket"], Key=key)["Body"].read()

    download = f"{fleet['url']}/api/jobs/{job_id}/outputs/{output['id']}/"
    whole = requests.get(download, headers=headers, timeout=10)
    assert whole.status_code == 200 and whole.headers["Content-Type"] == "image/png"
    assert whole.content == stored and whole.content.startswith(b"\x89PNG")
    part = requests.get(download, headers={**headers, "Range": "bytes=1-3"}, timeout=10)
    assert part.status_code == 206 and part.content == b"PNG"
    assert part.headers["Content-Range"] == f"bytes 1-3/{len(stored)}"
    other = requests.get(download, headers={"Authorization": f"Bearer {api_key_for(stranger)}"}, timeout=10)
    assert other.status_code == 404

    for place in ("worker-cwd", "worker-media", "web-media"):
        assert files_under(fleet[place]) == [], f"{place}: a file was written to a local disk"
