"""Workflow templates on real parts: a template with an image input and a seed, run as a batch of three
through a real GPU worker and the ComfyUI simulator (whose LoadImage reads the uploaded keyframe), ends
as one group at 100% and completed; a group cancel stops its running and waiting jobs."""

from __future__ import annotations

import io
import time
from typing import Any

import pytest
import requests
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image
from rest_framework.test import APIClient

from jobs.models import Job
from tests.conftest import wait_for
from tests.media_files import png
from tests.template_workflows import SLEEP_TEMPLATE_INPUTS, SLEEP_TEMPLATE_WORKFLOW, publish, publisher_user

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def group_when(api: APIClient, group_id: str, status: str, timeout: float = 90.0) -> dict[str, Any]:
    def reached() -> Any:
        body = api.get(f"/api/groups/{group_id}/").json()
        return body if body["status"] == status else None

    return wait_for(reached, timeout=timeout, message=f"group {group_id} {status}")


@pytest.fixture
def staff() -> APIClient:
    client = APIClient()
    client.force_authenticate(publisher_user())
    return client


def test_a_seed_sweep_of_a_keyframe_template_completes_as_one_group(
    live: Any, api: Any, staff: APIClient, simulator_session: Any
) -> None:
    publish(staff)
    # A colour of this run's own, so ComfyUI's cache never serves these jobs from an earlier run's.
    colour = (time.monotonic_ns() % 256, 90, 200)
    uploaded = api.post("/api/assets/", {"file": SimpleUploadedFile("kf.png", png(64, 48, colour))}, format="multipart")
    assert uploaded.status_code == 201, uploaded.content
    keyframe = uploaded.json()

    body = {
        "inputs": {"keyframe": keyframe["id"], "prompt": "a fox in the snow", "steps": 3},
        "batch": [{"inputs": {"seed": seed}} for seed in (11, 22, 33)],
        "project": "ep01",
        "shot": "sh010",
        "tags": ["seed-sweep"],
    }
    response = api.post("/api/templates/keyframe/jobs/", body, format="json")
    assert response.status_code == 201, response.content
    group = response.json()
    assert group["jobs_total"] == 3 and group["status"] in ("queued", "running")

    done = group_when(api, group["id"], "completed")
    assert (done["progress"], done["progress_percent"], done["counts"]) == (1.0, 100.0, {"completed": 3})

    jobs = [api.get(item["url"]).json() for item in done["jobs"]]
    assert [job["template"] for job in jobs] == [{"name": "keyframe", "version": 1}] * 3
    assert {(job["project"], job["shot"], job["group"]) for job in jobs} == {("ep01", "sh010", group["id"])}
    assert [Job.objects.get(pk=job["id"]).workflow["5"]["inputs"]["seed"] for job in jobs] == [11, 22, 33]
    for job in jobs:
        reads = requests.get(f"{simulator_session.url}/sim/input_reads", params={"prompt_id": job["id"]}, timeout=5)
        (read,) = reads.json()
        assert (read["node_id"], read["sha256"]) == ("7", keyframe["sha256"]), "LoadImage read the keyframe"
    # Each output averages the keyframe with what its seed sampled: three seeds, three images.
    colours = set()
    for job in jobs:
        (output,) = job["outputs"]
        image = Image.open(io.BytesIO(b"".join(api.get(output["download_url"]).streaming_content)))
        assert image.size == (64, 48)
        colours.add(image.getpixel((0, 0)))
    assert len(colours) == 3


def test_a_group_cancel_stops_the_running_job_and_the_waiting_ones(live: Any, api: APIClient, staff: APIClient) -> None:
    publish(staff, name="hold", workflow=SLEEP_TEMPLATE_WORKFLOW, inputs=SLEEP_TEMPLATE_INPUTS)
    base = time.monotonic_ns() % 16_000_000
    body = {"inputs": {"seconds": 60.0}, "batch": [{"inputs": {"colour": base + n}} for n in range(3)]}
    response = api.post("/api/templates/hold/jobs/", body, format="json")
    assert response.status_code == 201, response.content
    group = response.json()

    # One GPU worker: the first job runs, the other two wait behind it.
    running = group_when(api, group["id"], "running")
    wait_for(
        lambda: api.get(f"/api/groups/{group['id']}/").json()["counts"].get("running") == 1,
        timeout=60,
        message="the first job running",
    )
    assert running["jobs_total"] == 3
    cancelled = api.post(f"/api/groups/{group['id']}/cancel/")
    assert cancelled.status_code == 202, cancelled.content
    assert cancelled.json()["counts"] == {"running": 1, "cancelled": 2}, "the waiting jobs end at once"

    started = time.monotonic()
    done = group_when(api, group["id"], "cancelled", timeout=30)
    assert time.monotonic() - started < 30, "the running job was interrupted, not left to sleep for a minute"
    assert done["counts"] == {"cancelled": 3} and done["progress_percent"] == 100.0
    statuses = Job.objects.filter(group_id=group["id"]).values_list("status", "started_at")
    assert sum(1 for _, started_at in statuses if started_at is not None) == 1, "only one job ever ran"
