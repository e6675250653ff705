"""Template runs in pipelines: a job of a pipeline may be a template with its inputs, and an image
input may name another job's output ("output:<key>/<n>" in the pipeline, "output:<job id>/<n>" in a
plain template run), so a keyframe template feeds an image-to-video template."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from devtools.simulator_process import InProcessSimulator
from jobs import services
from jobs.models import Job, JobGroup, JobStatus
from jobs.tracking import job_track
from tests.factories import UserFactory
from tests.template_workflows import publish, publisher_user
from tests.unit.test_pipelines import by_key, empty_image, pipeline_body, sim_get, submit

pytestmark = pytest.mark.django_db

IMG2VID_WORKFLOW: dict[str, Any] = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "img2vid"}},
}
IMG2VID_INPUTS: dict[str, Any] = {"frame": {"kind": "image", "targets": [["1", "image"]]}}


@pytest.fixture(autouse=True)
def _templates(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    staff = APIClient()
    staff.force_authenticate(publisher_user())
    publish(staff)  # "keyframe": a prompt, a seed, and an image input averaged into the result
    publish(staff, name="img2vid", job_type="video", workflow=IMG2VID_WORKFLOW, inputs=IMG2VID_INPUTS)


def keyframe_to_video() -> dict[str, Any]:
    return pipeline_body(
        {"key": "sketch", "workflow": empty_image(64, 48, 0x3366CC)},
        {"key": "keyframe", "template": "keyframe", "inputs": {"keyframe": "output:sketch/0", "seed": 5}},
        {"key": "video", "template": "img2vid", "inputs": {"frame": "output:keyframe/0"}, "name": "shot 12 video"},
    )


def test_template_jobs_in_a_pipeline_are_filled_and_read_their_upstream_by_key(api: APIClient) -> None:
    jobs = by_key(submit(api, keyframe_to_video()))
    keyframe, video = jobs["keyframe"], jobs["video"]
    assert (keyframe.template_name, keyframe.template_version, keyframe.name) == ("keyframe", 1, "keyframe")
    assert keyframe.workflow["7"]["inputs"]["image"] == f"output:{jobs['sketch'].id}/0"
    assert keyframe.workflow["5"]["inputs"]["seed"] == 5
    assert (video.job_type, video.name, video.status) == ("video", "shot 12 video", JobStatus.BLOCKED)
    assert video.workflow["1"]["inputs"]["image"] == f"output:{keyframe.id}/0"


@pytest.mark.parametrize(
    ("job", "reason"),
    [
        ({"key": "b", "template": "nope", "inputs": {}}, "no template 'nope' you may run"),
        ({"key": "b", "template": "img2vid", "inputs": {"frame": "output:a/x"}}, 'must be "output:<job id>/<n>"'),
        (
            {"key": "b", "template": "img2vid", "inputs": {"frame": "output:zz/0"}},
            "no job of this pipeline has the key",
        ),
        ({"key": "b", "template": "img2vid", "version": 9, "inputs": {}}, "img2vid has versions 1 to 1"),
        ({"key": "b", "template": "img2vid", "workflow": empty_image(), "inputs": {}}, "not both"),
    ],
)
def test_a_bad_template_job_is_a_400_naming_it(api: APIClient, job: dict[str, Any], reason: str) -> None:
    response = api.post("/api/pipelines/", pipeline_body({"key": "a", "workflow": empty_image()}, job), format="json")
    assert response.status_code == 400 and reason in str(response.json()), response.content
    assert not Job.objects.exists() and not JobGroup.objects.exists()


def test_a_plain_template_run_may_read_an_existing_jobs_output_but_not_another_users(api: APIClient, user: Any) -> None:
    mine = services.job_create(user=user, workflow=empty_image(), job_type="image")
    response = api.post("/api/templates/img2vid/jobs/", {"inputs": {"frame": f"output:{mine.id}/0"}}, format="json")
    assert response.status_code == 201 and response.json()["status"] == "blocked", response.content

    theirs = services.job_create(user=UserFactory.create(), workflow=empty_image(), job_type="image")
    response = api.post("/api/templates/img2vid/jobs/", {"inputs": {"frame": f"output:{theirs.id}/0"}}, format="json")
    assert response.status_code == 400 and "you have no such job" in str(response.json())


def test_a_keyframe_template_feeds_an_image_to_video_template_in_comfyui(
    api: APIClient, settings: Any, comfyui_sim: InProcessSimulator
) -> None:
    settings.COMFYUI_BACKENDS = {"default": comfyui_sim.url}
    jobs = by_key(submit(api, keyframe_to_video()))
    for key in ("sketch", "keyframe", "video"):
        job_track(str(jobs[key].id))
        jobs[key].refresh_from_db()
        assert jobs[key].status == JobStatus.COMPLETED, (key, jobs[key].error_message)
    for upstream, downstream in (("sketch", "keyframe"), ("keyframe", "video")):
        (output,) = jobs[upstream].outputs.all()
        (read,) = sim_get(comfyui_sim, "/sim/input_reads", prompt_id=str(jobs[downstream].prompt_id))
        assert read["sha256"] == hashlib.sha256(output.file.read()).hexdigest(), (upstream, downstream)
    pipeline = api.get(f"/api/pipelines/{jobs['video'].group_id}/").json()
    assert pipeline["status"] == "completed"
