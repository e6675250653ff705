"""The tracker puts a job's input assets into its ComfyUI's input folder before submitting, under names
it makes (a subfolder per job), and submits the prompt with those names; the real tracker in this
process against the simulator on a thread, which decodes what LoadImage reads."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image
from rest_framework.test import APIClient

from assets.models import Asset
from devtools.simulator_process import InProcessSimulator
from jobs.models import EventKind, FailureCategory, Job, JobStatus
from jobs.tracking import job_track
from tests.media_files import asset_of, png

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _system(settings: Any, tmp_path: Path, comfyui_sim: InProcessSimulator) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.COMFYUI_BACKENDS = {"default": comfyui_sim.url}
    settings.TRACKER_RECONNECT_SECONDS = 3


def sim_get(sim: InProcessSimulator, path: str, **params: str) -> Any:
    return requests.get(f"{sim.url}{path}", params=params, timeout=5).json()


def submitted(api: APIClient, workflow: dict[str, Any]) -> Job:
    response = api.post("/api/jobs/", {"workflow": workflow, "job_type": "image"}, format="json")
    assert response.status_code == 201, response.content
    return Job.objects.get(pk=response.json()["id"])


def keyframe_workflow(asset: Asset) -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": f"asset:{asset.id}"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "from_keyframe"}},
    }


def test_a_job_reads_its_uploaded_keyframe_in_comfyui(
    api: APIClient, user: Any, comfyui_sim: InProcessSimulator
) -> None:
    asset = asset_of(user, png(37, 23, (12, 200, 77)), "keyframe.png")
    job = submitted(api, keyframe_workflow(asset))
    job_track(str(job.id))
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED, job.error_message

    subfolder, name = f"anime_production/{job.id}", f"{job.id}-0.png"
    (placed,) = sim_get(comfyui_sim, "/sim/uploads")
    assert (placed["subfolder"], placed["filename"], placed["name"]) == (subfolder, name, name)
    assert placed["sha256"] == asset.sha256 and placed["type"] == "input"
    (read,) = sim_get(comfyui_sim, "/sim/input_reads", prompt_id=str(job.prompt_id))
    assert (read["node_id"], read["image"], read["sha256"]) == ("1", f"{subfolder}/{name}", asset.sha256)

    (output,) = job.outputs.all()
    image = Image.open(io.BytesIO(output.file.read()))
    assert image.size == (37, 23) and image.getpixel((0, 0)) == (12, 200, 77)
    assert job.workflow["1"]["inputs"]["image"] == f"asset:{asset.id}", "the stored workflow is what was submitted"
    (note,) = [e.data for e in job.events.filter(kind=EventKind.NOTE) if "inputs_placed" in e.data]
    assert note["inputs_placed"] == [
        {"node_id": "1", "input": "image", "asset": str(asset.id), "comfyui_name": f"{subfolder}/{name}"}
    ]


def test_a_second_delivery_uploads_nothing_and_submits_nothing(
    api: APIClient, user: Any, comfyui_sim: InProcessSimulator
) -> None:
    job = submitted(api, keyframe_workflow(asset_of(user, png(5, 5))))
    job_track(str(job.id))
    job_track(str(job.id))  # the broker delivers the task again
    assert len(sim_get(comfyui_sim, "/sim/uploads")) == 1
    assert [s["prompt_id"] for s in sim_get(comfyui_sim, "/sim/submissions")] == [str(job.id)]


def test_an_upload_made_again_before_submitting_is_kept_once_under_the_same_name(
    api: APIClient, user: Any, comfyui_sim: InProcessSimulator
) -> None:
    """A delivery that died after uploading but before submitting: the next one uploads the same
    bytes under the same name, and ComfyUI keeps the one file."""
    job = submitted(api, keyframe_workflow(asset_of(user, png(6, 6))))
    name = f"{job.id}-0.png"
    files = {"image": (name, png(6, 6), "image/png")}
    fields = {"type": "input", "subfolder": f"anime_production/{job.id}", "overwrite": "false"}
    requests.post(f"{comfyui_sim.url}/upload/image", files=files, data=fields, timeout=5)
    job_track(str(job.id))
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED
    uploads = sim_get(comfyui_sim, "/sim/uploads")
    assert [(u["name"], u["duplicate"]) for u in uploads] == [(name, False), (name, True)]
    folder = comfyui_sim.output_dir.parent / "input" / "anime_production" / str(job.id)
    assert [p.name for p in folder.iterdir()] == [name]


def test_each_asset_is_placed_once_however_many_inputs_name_it(
    api: APIClient, user: Any, comfyui_sim: InProcessSimulator
) -> None:
    pose, mask = asset_of(user, png(8, 8, (1, 2, 3))), asset_of(user, png(8, 8, (0, 0, 0, 0), mode="RGBA"))
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": f"asset:{pose.id}"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": f"asset:{pose.id}"}},
        "3": {"class_type": "LoadImageMask", "inputs": {"image": f"asset:{mask.id}", "channel": "alpha"}},
        "4": {"class_type": "MaskToImage", "inputs": {"mask": ["3", 0]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "a"}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "b"}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "c"}},
    }
    job = submitted(api, workflow)
    job_track(str(job.id))
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED, job.error_message
    assert sorted(u["filename"] for u in sim_get(comfyui_sim, "/sim/uploads")) == [
        f"{job.id}-0.png",
        f"{job.id}-1.png",
    ]
    first, second = f"anime_production/{job.id}/{job.id}-0.png", f"anime_production/{job.id}/{job.id}-1.png"
    (note,) = [e.data for e in job.events.filter(kind=EventKind.NOTE) if "inputs_placed" in e.data]
    assert [(p["node_id"], p["comfyui_name"]) for p in note["inputs_placed"]] == [
        ("1", first),
        ("2", first),
        ("3", second),
    ]
    # Node 2 has node 1's inputs: ComfyUI serves it from node 1's result, as the simulator does.
    reads = {r["node_id"]: r for r in sim_get(comfyui_sim, "/sim/input_reads", prompt_id=str(job.prompt_id))}
    assert (reads["1"]["image"], reads["1"]["sha256"]) == (first, pose.sha256)
    assert (reads["3"]["image"], reads["3"]["sha256"]) == (second, mask.sha256)


def test_an_asset_gone_before_its_job_runs_fails_the_job_and_nothing_reaches_comfyui(
    api: APIClient, user: Any, comfyui_sim: InProcessSimulator
) -> None:
    asset = asset_of(user, png(4, 4))
    job = submitted(api, keyframe_workflow(asset))
    Asset.objects.filter(pk=asset.pk).delete()  # e.g. gone between a retry's original and the retry
    job_track(str(job.id))
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.failure_category == FailureCategory.VALIDATION
    assert f"node 1 (LoadImage): input 'image' = 'asset:{asset.id}'" in job.error_message
    assert sim_get(comfyui_sim, "/sim/uploads") == [] and sim_get(comfyui_sim, "/sim/submissions") == []
