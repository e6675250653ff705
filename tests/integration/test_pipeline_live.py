"""Shot pipelines on real parts: a two-job pipeline through the API, the real GPU worker (a Celery
process) and the simulator as a process. The downstream job is released by the upstream's final
transition in the worker, and its LoadImage reads exactly the upstream's stored output, placed
through ComfyUI's /upload/image; an upstream that fails in ComfyUI fails the downstream job
`dependency_failed`."""

from __future__ import annotations

import hashlib
import io
import time
from typing import Any

import pytest
import requests
from PIL import Image

from tests.integration.test_job_lifecycle import wait_final

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def sim(simulator_session: Any, path: str, **params: str) -> Any:
    return requests.get(f"{simulator_session.url}{path}", params=params, timeout=5).json()


def keyframe(colour: int) -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 44, "height": 26, "batch_size": 1, "color": colour}},
        "2": {"class_type": "TestSleep", "inputs": {"value": ["1", 0], "seconds": 1.0}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "pipeline_keyframe"}},
    }


def from_keyframe(reference: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": reference}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "pipeline_video"}},
    }


def submitted(api: Any, *jobs: dict[str, Any]) -> dict[str, str]:
    body = {"name": "live pipeline", "project": "moon", "shot": "007", "job_type": "image", "jobs": list(jobs)}
    response = api.post("/api/pipelines/", body, format="json")
    assert response.status_code == 201, response.content
    return {row["key"]: row["id"] for row in response.json()["jobs"]}


def downloaded(api: Any, url: str) -> bytes:
    return b"".join(api.get(url).streaming_content)


def test_the_downstream_job_reads_the_upstream_output_on_the_real_worker(
    live: Any, api: Any, simulator_session: Any
) -> None:
    # A colour of this run's own, so ComfyUI's cache never serves these jobs from an earlier run.
    rgb = (time.monotonic_ns() % 256, 90, 200)
    ids = submitted(
        api,
        {"key": "keyframe", "workflow": keyframe(rgb[0] << 16 | rgb[1] << 8 | rgb[2])},
        {"key": "video", "workflow": from_keyframe("output:keyframe/0")},
    )
    assert api.get(f"/api/jobs/{ids['video']}/").json()["status"] in ("blocked", "queued", "submitted", "running")
    video = wait_final(api, ids["video"])
    assert video["status"] == "completed", video
    upstream = api.get(f"/api/jobs/{ids['keyframe']}/").json()
    (sent,) = upstream["outputs"]
    sent_hash = hashlib.sha256(downloaded(api, sent["download_url"])).hexdigest()

    (read,) = sim(simulator_session, "/sim/input_reads", prompt_id=ids["video"])
    assert read["sha256"] == sent_hash, "LoadImage read the upstream job's stored output"
    assert read["image"] == f"anime_production/{ids['video']}/{ids['video']}-0.png"
    (output,) = video["outputs"]
    image = Image.open(io.BytesIO(downloaded(api, output["download_url"])))
    assert image.size == (44, 26) and image.getpixel((0, 0)) == rgb

    pipeline = api.get(f"/api/pipelines/{video['group']}/").json()
    assert (pipeline["status"], pipeline["progress_percent"]) == ("completed", 100.0)
    assert [(row["key"], row["upstream"]) for row in pipeline["jobs"]] == [("keyframe", []), ("video", ["keyframe"])]


def test_an_upstream_failing_in_comfyui_fails_the_downstream_job_dependency_failed(live: Any, api: Any) -> None:
    failing = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 1}},
        "2": {"class_type": "TestSyncError", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "never"}},
    }
    ids = submitted(
        api, {"key": "keyframe", "workflow": failing}, {"key": "video", "workflow": from_keyframe("output:keyframe")}
    )
    video = wait_final(api, ids["video"])
    assert (video["status"], video["failure_category"]) == ("failed", "dependency_failed"), video
    assert ids["keyframe"] in video["error"]["message"] and "failed (node_error)" in video["error"]["message"]
    assert api.get(f"/api/jobs/{ids['keyframe']}/").json()["status"] == "failed"
