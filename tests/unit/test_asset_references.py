"""`POST /api/jobs/` and "asset:<id>" references: each names the submitter's own asset, of a kind the
loader reads; a plain name in a loader input is a file name, never a path. Every refusal is a 400
naming the node and the input. An accepted job records which assets it uses."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from assets.models import AssetUse
from assets.references import asset_references, distinct_assets
from jobs import services
from jobs.models import Job, JobStatus
from tests.factories import UserFactory
from tests.media_files import asset_of, png, wav

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _media(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


def loader(class_type: str, input_name: str, value: str, **others: Any) -> dict[str, Any]:
    return {
        "1": {"class_type": class_type, "inputs": {input_name: value, **others}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
    }


def submit(api: APIClient, workflow: dict[str, Any]) -> Any:
    return api.post("/api/jobs/", {"workflow": workflow, "job_type": "image"}, format="json")


def refused(api: APIClient, workflow: dict[str, Any]) -> str:
    response = submit(api, workflow)
    assert response.status_code == 400, response.content
    return " ".join(response.json()["workflow"])


def test_a_reference_to_an_own_image_is_accepted_and_its_use_recorded(api: APIClient, user: Any) -> None:
    asset = asset_of(user, png(4, 4))
    response = submit(api, loader("LoadImage", "image", f"asset:{asset.id}"))
    assert response.status_code == 201, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.workflow["1"]["inputs"]["image"] == f"asset:{asset.id}", "the stored workflow keeps the reference"
    (use,) = AssetUse.objects.filter(job_id=job.id)
    assert (use.asset_id, use.node_id, use.input_name, use.released_at) == (asset.id, "1", "image", None)


def test_a_missing_or_someone_elses_asset_is_a_400_naming_node_and_input(api: APIClient) -> None:
    nowhere = uuid.uuid4()
    text = refused(api, loader("LoadImage", "image", f"asset:{nowhere}"))
    assert f"node 1 (LoadImage): input 'image' = 'asset:{nowhere}': you have no such asset" in text
    theirs = asset_of(UserFactory.create(), png(5, 5))
    assert "you have no such asset" in refused(api, loader("LoadImage", "image", f"asset:{theirs.id}"))
    assert not Job.objects.exists()


def test_a_kind_the_loader_does_not_read_is_a_400(api: APIClient, user: Any) -> None:
    audio = asset_of(user, wav(0.2), "voice.wav")
    text = refused(api, loader("LoadImage", "image", f"asset:{audio.id}"))
    assert f"node 1 (LoadImage): input 'image' = 'asset:{audio.id}' is an audio asset; LoadImage reads image" in text
    image = asset_of(user, png(3, 3))
    text = refused(api, loader("VHS_LoadVideo", "video", f"asset:{image.id}"))
    assert "is an image asset; VHS_LoadVideo reads video there" in text
    # An unknown node's input takes any kind; LoadAudio takes audio (and video).
    assert submit(api, loader("SomeCustomLoader", "path", f"asset:{image.id}")).status_code == 201
    assert submit(api, loader("LoadAudio", "audio", f"asset:{audio.id}")).status_code == 201


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("asset:not-a-uuid", "is not an asset reference"),
        ("../../../etc/passwd", "is a path, not a file name"),
        ("/etc/passwd", "is a path, not a file name"),
        ("sub/other.png", "is a path, not a file name"),
        ("C:evil.png", "is a path, not a file name"),
        ("someone_elses_output.png [output]", "reads from ComfyUI's output or temp folder"),
        ("preview.png [temp]", "reads from ComfyUI's output or temp folder"),
    ],
)
def test_a_name_that_is_not_a_plain_file_name_is_a_400(api: APIClient, value: str, reason: str) -> None:
    text = refused(api, loader("LoadImage", "image", value))
    assert text.startswith("node 1 (LoadImage): input 'image' = ") and reason in text


def test_a_plain_name_of_a_file_already_in_comfyuis_input_folder_passes(api: APIClient) -> None:
    assert submit(api, loader("LoadImage", "image", "example.png")).status_code == 201
    assert submit(api, loader("LoadImage", "image", "example.png [input]")).status_code == 201


def test_references_are_ordered_and_each_asset_counted_once() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    workflow = {
        "10": {"class_type": "LoadImage", "inputs": {"image": f"asset:{a}"}},
        "2": {"class_type": "LoadImageMask", "inputs": {"image": f"asset:{b}", "channel": "alpha"}},
        "3": {"class_type": "LoadImage", "inputs": {"image": f"asset:{a}"}},
        "4": {"class_type": "Note", "inputs": {"text": "assets are named asset:<id>"}},
    }
    references, problems = asset_references(workflow)
    assert problems == []
    assert [(r.node_id, r.asset_id) for r in references] == [("2", b), ("3", a), ("10", a)]
    assert distinct_assets(references) == [b, a]


def test_a_job_that_ends_releases_its_assets_and_a_retry_uses_them_again(api: APIClient, user: Any) -> None:
    asset = asset_of(user, png(6, 6))
    job = Job.objects.get(pk=submit(api, loader("LoadImage", "image", f"asset:{asset.id}")).json()["id"])
    services.job_cancel(job)
    assert AssetUse.objects.get(job_id=job.id).released_at is not None
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    retry = services.job_retry(job)
    assert AssetUse.objects.get(job_id=retry.id).released_at is None
