"""`/api/assets/`: an upload is judged by its bytes, bounded, deduplicated per owner, stored under a
generated name, served inert, and visible to its owner only (and to staff who may view assets)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from assets.models import Asset, AssetUse
from jobs import services
from jobs.models import Job
from tests.factories import UserFactory
from tests.media_files import HTML_PAGE, animation, asset_of, image_bytes, mp4, png, wav, webm

pytestmark = pytest.mark.django_db

SANDBOX = "sandbox; default-src 'none'"


@pytest.fixture(autouse=True)
def _media(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


def post_file(api: APIClient, data: bytes, filename: str, **fields: str) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    body = {"file": SimpleUploadedFile(filename, data, content_type="image/png"), **fields}
    return api.post("/api/assets/", body, format="multipart")


def body(response: Any) -> bytes:
    return b"".join(response.streaming_content)


def client_for(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_an_image_becomes_an_asset_with_what_its_header_says(api: APIClient, settings: Any) -> None:
    response = post_file(api, png(37, 23), "keyframe.png", name="shot 12 keyframe")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["kind"] == "image" and body["media_type"] == "image/png"
    assert (body["width"], body["height"], body["frames"]) == (37, 23, 1)
    assert body["name"] == "shot 12 keyframe"
    assert body["reference"] == f"asset:{body['id']}"
    asset = Asset.objects.get(pk=body["id"])
    # Stored under a generated name, never the client's.
    assert asset.file.name == f"assets/{asset.id}.png"
    assert Path(settings.MEDIA_ROOT, asset.file.name).read_bytes() == png(37, 23)


def test_the_type_comes_from_the_bytes_not_the_name(api: APIClient) -> None:
    as_video = post_file(api, png(4, 4), "pose.mp4")
    assert as_video.status_code == 201 and as_video.json()["kind"] == "image"
    assert as_video.json()["media_type"] == "image/png"
    assert str(Asset.objects.get(pk=as_video.json()["id"]).file.name).endswith(".png")

    page = post_file(api, HTML_PAGE, "innocent.png")
    assert page.status_code == 400
    assert "not a supported type: its content is no known kind of media" in page.json()["file"][0]
    assert Asset.objects.count() == 1


@pytest.mark.parametrize(
    ("data", "kind", "media_type", "facts"),
    [
        (image_bytes("JPEG", 40, 30), "image", "image/jpeg", (40, 30, 1, None)),
        (image_bytes("JPEG", 41, 31, progressive=True), "image", "image/jpeg", (41, 31, 1, None)),
        (image_bytes("WEBP", 17, 9, lossless=True), "image", "image/webp", (17, 9, 1, None)),
        (image_bytes("WEBP", 18, 10, quality=50), "image", "image/webp", (18, 10, 1, None)),
        (animation("GIF", 5, 12, 7), "image", "image/gif", (12, 7, 5, None)),
        (animation("WEBP", 4, 12, 7), "image", "image/webp", (12, 7, 4, None)),
        (animation("PNG", 3, 6, 6), "image", "image/png", (6, 6, 3, None)),
        (mp4(640, 360, 48, 2.0), "video", "video/mp4", (640, 360, 48, 2.0)),
        (mp4(320, 240, 24, 1.0, brand=b"qt  ", moov_last=True), "video", "video/quicktime", (320, 240, 24, 1.0)),
        (webm(256, 144, 3.5), "video", "video/webm", (256, 144, None, 3.5)),
        (wav(1.5), "audio", "audio/wav", (None, None, None, 1.5)),
    ],
)
def test_each_supported_kind_with_its_size_frames_and_duration(
    api: APIClient, data: bytes, kind: str, media_type: str, facts: tuple
) -> None:
    response = post_file(api, data, "whatever.bin")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["kind"], body["media_type"]) == (kind, media_type)
    assert (body["width"], body["height"], body["frames"], body["duration_seconds"]) == facts


def test_the_same_bytes_twice_are_the_same_asset(api: APIClient, user: Any) -> None:
    first = post_file(api, png(9, 9), "a.png")
    again = post_file(api, png(9, 9), "b.png", name="another name")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert Asset.objects.count() == 1
    # Per owner: someone else's identical upload is their own asset.
    theirs = post_file(client_for(UserFactory.create()), png(9, 9), "a.png")
    assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"]


@pytest.mark.parametrize(
    ("limits", "data", "reason"),
    [
        ({}, b"", "the file is empty"),
        ({"ASSET_MAX_BYTES": 100}, png(64, 64, mode="RGBA") + b"\x00" * 200, "larger than the limit of 100 bytes"),
        ({"ASSET_MAX_PIXELS": 1000}, png(40, 30), "1200 pixels per frame; the limit is 1000"),
        ({"ASSET_MAX_FRAMES": 4}, animation("GIF", 5), "5 frames; the limit is 4"),
        ({"ASSET_MAX_FRAMES": 10}, mp4(64, 64, 11, 1.0), "11 frames; the limit is 10"),
        ({"ASSET_MAX_PIXELS": 100_000}, mp4(1920, 1080, 2, 1.0), "2073600 pixels per frame"),
        ({"ASSET_MAX_SECONDS": 2}, webm(64, 64, 3.0), "lasts 3.0 seconds; the limit is 2"),
        ({"ASSET_MAX_SECONDS": 1}, wav(1.5), "lasts 1.5 seconds"),
        ({}, png(8, 8)[:20], "header cannot be read"),
        ({}, b"\x00\x00\x00\x18ftypisom" + b"\x00" * 12, "no moov box"),
    ],
)
def test_refusals_are_a_400_with_the_reason(
    api: APIClient, settings: Any, limits: dict, data: bytes, reason: str
) -> None:
    for name, value in limits.items():
        setattr(settings, name, value)
    response = post_file(api, data, "x.png")
    assert response.status_code == 400, response.content
    assert reason in response.json()["file"][0]
    assert not Asset.objects.exists()
    assert not list(Path(settings.MEDIA_ROOT).rglob("*.*")), "a refused upload left a file behind"


def test_a_body_declaring_more_than_the_limit_is_refused_unread(api: APIClient, settings: Any) -> None:
    settings.ASSET_MAX_BYTES = 1000
    response = api.generic(
        "POST", "/api/assets/", "x" * 10, content_type="multipart/form-data; boundary=b", CONTENT_LENGTH="10000000"
    )
    assert response.status_code == 400 and "larger than the limit of 1000" in response.json()["file"][0]


def test_quotas_per_user(api: APIClient, settings: Any) -> None:
    settings.ASSET_MAX_PER_USER = 2
    assert post_file(api, png(1, 1), "a.png").status_code == 201
    assert post_file(api, png(2, 2), "b.png").status_code == 201
    third = post_file(api, png(3, 3), "c.png")
    assert third.status_code == 400 and "you have 2 assets; the limit is 2" in third.json()["file"][0]
    assert post_file(api, png(1, 1), "a-again.png").status_code == 200, "a duplicate costs nothing"

    settings.ASSET_MAX_PER_USER = 100
    settings.ASSET_MAX_BYTES_PER_USER = sum(Asset.objects.values_list("size_bytes", flat=True)) + 10
    over = post_file(api, png(30, 30), "d.png")
    assert over.status_code == 400 and "past your limit" in over.json()["file"][0]


def test_content_is_served_inert(api: APIClient) -> None:
    asset_id = post_file(api, png(5, 5), "../../etc/passwd.png", name='evil"; name=.svg').json()["id"]
    response = api.get(f"/api/assets/{asset_id}/content/")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == SANDBOX
    assert response["Content-Disposition"].startswith("inline")
    assert "/" not in response["Content-Disposition"] and 'evil"' not in response["Content-Disposition"]
    assert body(response) == png(5, 5)


def test_others_get_404_and_staff_with_the_view_permission_see_all(api: APIClient, user: Any) -> None:
    mine = post_file(api, png(6, 6), "mine.png").json()["id"]
    stranger = client_for(UserFactory.create())
    for path in (f"/api/assets/{mine}/", f"/api/assets/{mine}/content/"):
        assert stranger.get(path).status_code == 404
    assert stranger.delete(f"/api/assets/{mine}/").status_code == 404
    assert stranger.get("/api/assets/").json()["results"] == []

    plain_staff = client_for(UserFactory.create(is_staff=True))
    assert plain_staff.get(f"/api/assets/{mine}/").status_code == 404
    viewer = UserFactory.create(is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_asset", content_type__app_label="assets"))
    viewing = client_for(viewer)
    assert viewing.get(f"/api/assets/{mine}/").json()["owner"] == user.username
    assert viewing.get(f"/api/assets/{mine}/content/").status_code == 200
    assert viewing.delete(f"/api/assets/{mine}/").status_code == 403, "seeing is not deleting"
    assert Asset.objects.filter(pk=mine).exists()


def test_list_is_own_newest_first_filtered_by_kind_and_paginated(api: APIClient, user: Any) -> None:
    image = post_file(api, png(2, 2), "a.png").json()["id"]
    audio = post_file(api, wav(0.1), "b.wav").json()["id"]
    asset_of(UserFactory.create(), png(3, 3))
    listed = api.get("/api/assets/").json()
    assert [a["id"] for a in listed["results"]] == [audio, image]
    assert [a["id"] for a in api.get("/api/assets/", {"kind": "image"}).json()["results"]] == [image]
    assert [a["id"] for a in api.get("/api/assets/", {"media_type": "audio/wav"}).json()["results"]] == [audio]
    first_page = api.get("/api/assets/", {"page_size": 1}).json()
    assert [a["id"] for a in first_page["results"]] == [audio]
    assert [a["id"] for a in api.get(first_page["next"]).json()["results"]] == [image]
    assert api.get("/api/assets/", {"cursor": "forged"}).status_code == 400


def test_delete_is_refused_while_a_waiting_job_uses_the_asset(
    api: APIClient, user: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    asset_id = post_file(api, png(7, 7), "pose.png").json()["id"]
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": f"asset:{asset_id}"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
    }
    job_id = api.post("/api/jobs/", {"workflow": workflow, "job_type": "image"}, format="json").json()["id"]
    assert AssetUse.objects.filter(job_id=job_id, asset_id=asset_id, released_at__isnull=True).exists()
    refused = api.delete(f"/api/assets/{asset_id}/")
    assert refused.status_code == 409 and refused.json()["jobs"] == [job_id]

    services.job_cancel(Job.objects.get(pk=job_id))  # the job ends: its uses are released
    stored = Path(settings.MEDIA_ROOT, str(Asset.objects.get(pk=asset_id).file.name))
    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete(f"/api/assets/{asset_id}/").status_code == 204
    assert not Asset.objects.filter(pk=asset_id).exists()
    assert not stored.exists(), "the file is removed with the asset"
