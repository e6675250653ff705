"""Input files on real parts: an asset uploaded through the API reaches a real GPU worker's ComfyUI (the
simulator as a process) in the job's own subfolder, LoadImage reads exactly that file, and a second
delivery of the task neither uploads it again nor submits the prompt again."""

from __future__ import annotations

import io
import time
from typing import Any

import pytest
import requests
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from jobs.models import Job
from jobs.tasks import job_run
from jobs.tracking import job_track
from tests.conftest import wait_for
from tests.integration.test_job_lifecycle import submit, wait_final
from tests.media_files import png

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def sim(simulator_session: Any, path: str, **params: str) -> Any:
    return requests.get(f"{simulator_session.url}{path}", params=params, timeout=5).json()


def test_an_uploaded_keyframe_reaches_loadimage_once_and_shapes_the_output(
    live: Any, api: Any, simulator_session: Any
) -> None:
    # A colour of this run's own, so ComfyUI's cache never serves this job from an earlier one.
    colour = (time.monotonic_ns() % 256, 180, 40)
    keyframe = png(41, 29, colour)
    uploaded = api.post(
        "/api/assets/", {"file": SimpleUploadedFile("kf.png", keyframe), "name": "keyframe"}, format="multipart"
    )
    assert uploaded.status_code == 201, uploaded.content
    asset = uploaded.json()
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": asset["reference"]}},
        "2": {"class_type": "TestSleep", "inputs": {"value": ["1", 0], "seconds": 2.0}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "from_keyframe"}},
    }
    job = submit(api, workflow)
    job_run.apply_async((job["id"],), queue="gpu.default")  # the broker delivers the task again, later
    wait_for(lambda: api.get(f"/api/jobs/{job['id']}/").json()["status"] == "running", message="job running")
    job_track(job["id"])  # and once more while the first delivery follows the job, from another process
    done = wait_final(api, job["id"])
    assert done["status"] == "completed", done
    time.sleep(1.0)  # let the queued duplicate run (and stop)

    subfolder = f"anime_production/{job['id']}"
    name = f"{job['id']}-0.png"
    placed = [u for u in sim(simulator_session, "/sim/uploads") if u["subfolder"] == subfolder]
    assert [(u["filename"], u["name"], u["sha256"]) for u in placed] == [(name, name, asset["sha256"])]
    submitted = [s for s in sim(simulator_session, "/sim/submissions") if s["prompt_id"] == job["id"]]
    assert len(submitted) == 1
    (read,) = sim(simulator_session, "/sim/input_reads", prompt_id=job["id"])
    assert (read["node_id"], read["image"], read["sha256"]) == ("1", f"{subfolder}/{name}", asset["sha256"])

    (output,) = done["outputs"]
    image = Image.open(io.BytesIO(b"".join(api.get(output["download_url"]).streaming_content)))
    assert image.size == (41, 29) and image.getpixel((0, 0)) == colour
    assert Job.objects.get(pk=job["id"]).workflow["1"]["inputs"]["image"] == asset["reference"]

    # The job is over: the asset may be deleted now.
    assert api.delete(f"/api/assets/{asset['id']}/").status_code == 204
