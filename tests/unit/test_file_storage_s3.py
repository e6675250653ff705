"""Files in an S3-compatible store (issue 14, part 1): outputs, thumbnails, previews and input assets
go to the bucket through Django's storage API, nothing is written under MEDIA_ROOT, and downloads are
authorized by the project, then streamed with HTTP Range or answered by a short-lived signed redirect
that carries the type and disposition the project decided. The store is moto's S3 server, over HTTP."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from rest_framework.test import APIClient

from jobs import services
from jobs.models import Job, JobOutput, JobStatus
from tests.factories import JobFactory, UserFactory, api_key_for
from tests.hostile_comfyui import HTML_WITH_SCRIPT, PNG_1PX, image_outputs
from tests.media_files import png
from tests.object_store_server import ObjectStoreServer, bucket_create, bucket_keys, storages_setting
from tests.unit.test_hostile_comfyui_outputs import tracked

pytestmark = pytest.mark.django_db

MP4_HEAD = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
VIDEO = MP4_HEAD + os.urandom(700 * 1024)  # more than one 256 KiB chunk
SANDBOX = "sandbox; default-src 'none'"


@pytest.fixture(scope="module")
def object_store() -> Iterator[ObjectStoreServer]:
    server = ObjectStoreServer().start()
    yield server
    server.stop()


@pytest.fixture
def bucket(settings: Any, object_store: ObjectStoreServer, tmp_path: Path) -> Iterator[str]:
    """Every file of this test in a bucket of its own; nothing may appear under MEDIA_ROOT."""
    name = bucket_create(object_store.endpoint)
    settings.STORAGES = storages_setting(object_store.endpoint, name)
    settings.AWS_STORAGE_BUCKET_NAME = name
    settings.AWS_S3_ENDPOINT_URL = object_store.endpoint
    settings.MEDIA_ROOT = tmp_path / "media"
    yield name
    assert not any(Path(tmp_path / "media").rglob("*")), "a file was written to a local path"


def body(response: Any) -> bytes:
    return b"".join(response.streaming_content)


def video_job(hostile_comfyui: Any, user: Any) -> Job:
    outputs = {"9": {"images": [{"filename": "still.png", "subfolder": "", "type": "output"}]}}
    outputs["12"] = {"gifs": [{"filename": "shot.mp4", "subfolder": "", "type": "output", "format": "video/h264-mp4"}]}
    return tracked(hostile_comfyui, outputs, {"still.png": png(64, 40), "shot.mp4": VIDEO}, user=user)


def test_outputs_and_thumbnails_go_to_the_bucket_and_video_is_served_by_range(
    hostile_comfyui, bucket, object_store, api, user
):
    job = video_job(hostile_comfyui, user)

    assert job.status == JobStatus.COMPLETED
    outputs = {o.comfy_filename: o for o in job.outputs.all()}
    keys = bucket_keys(object_store.endpoint, bucket)
    assert {outputs["shot.mp4"].file.name, outputs["still.png"].file.name, outputs["still.png"].thumbnail.name} <= set(
        keys
    ), "the outputs and the thumbnail are objects in the bucket"
    video = outputs["shot.mp4"]
    url = f"/api/jobs/{job.id}/outputs/{video.pk}/"

    whole = api.get(url)
    assert whole.status_code == 200 and whole["Content-Type"] == "video/mp4"
    assert whole["Accept-Ranges"] == "bytes" and whole["Content-Length"] == str(len(VIDEO))
    assert whole["Content-Security-Policy"] == SANDBOX and whole["X-Content-Type-Options"] == "nosniff"
    assert body(whole) == VIDEO

    part = api.get(url, HTTP_RANGE="bytes=300000-300099")
    assert part.status_code == 206 and part["Content-Type"] == "video/mp4"
    assert part["Content-Range"] == f"bytes 300000-300099/{len(VIDEO)}" and part["Content-Length"] == "100"
    assert body(part) == VIDEO[300000:300100]

    tail = api.get(url, HTTP_RANGE="bytes=-1000")
    assert tail.status_code == 206 and body(tail) == VIDEO[-1000:]
    rest = api.get(url, HTTP_RANGE="bytes=500000-")
    assert rest.status_code == 206 and body(rest) == VIDEO[500000:]

    past = api.get(url, HTTP_RANGE=f"bytes={len(VIDEO) + 10}-")
    assert past.status_code == 416 and past["Content-Range"] == f"bytes */{len(VIDEO)}"
    several = api.get(url, HTTP_RANGE="bytes=0-1,5-6,9-20")
    assert several.status_code == 200 and body(several) == VIDEO, "many ranges: the whole file, once"

    thumbnail = api.get(f"/api/jobs/{job.id}/outputs/{outputs['still.png'].pk}/thumbnail/")
    assert thumbnail.status_code == 200 and thumbnail["Content-Type"] == "image/webp"
    assert body(thumbnail)[8:12] == b"WEBP"


def test_another_user_gets_a_404_not_the_file(hostile_comfyui, bucket, user, settings):
    job = video_job(hostile_comfyui, user)
    stranger = APIClient()
    stranger.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_for(UserFactory.create())}")
    output = job.outputs.first()
    assert output is not None
    for mode in ("stream", "redirect"):
        settings.FILE_DOWNLOADS = mode
        response = stranger.get(f"/api/jobs/{job.id}/outputs/{output.pk}/")
        assert response.status_code == 404 and "Location" not in response


def test_signed_redirect_carries_the_projects_type_and_disposition(hostile_comfyui, bucket, api, user, settings):
    settings.FILE_DOWNLOADS = "redirect"
    settings.FILE_DOWNLOAD_URL_SECONDS = 30
    job = tracked(
        hostile_comfyui,
        image_outputs("9", ["x.html", "ok.png"]),
        {"x.html": HTML_WITH_SCRIPT, "ok.png": PNG_1PX},
        user=user,
    )
    outputs = {o.comfy_filename: o for o in job.outputs.all()}

    response = api.get(f"/api/jobs/{job.id}/outputs/{outputs['x.html'].pk}/")
    assert response.status_code == 302 and response["Cache-Control"] == "no-store"
    location = response["Location"]
    query = parse_qs(urlsplit(location).query)
    assert query["X-Amz-Expires"] == ["30"] and "X-Amz-Signature" in query, "signed, short-lived"
    assert query["response-content-type"] == ["application/octet-stream"]
    assert query["response-content-disposition"][0].startswith("attachment;")
    fetched = requests.get(location, timeout=10)
    assert fetched.status_code == 200 and fetched.content == HTML_WITH_SCRIPT
    assert fetched.headers["Content-Type"] == "application/octet-stream", "never text/html"
    assert fetched.headers["Content-Disposition"].startswith("attachment;")
    assert ".bin" in fetched.headers["Content-Disposition"]

    unsigned = location.split("?")[0]
    assert requests.get(unsigned, timeout=10).status_code == 403, "the bucket is not public"

    image = api.get(f"/api/jobs/{job.id}/outputs/{outputs['ok.png'].pk}/")
    signed = requests.get(image["Location"], headers={"Range": "bytes=0-7"}, timeout=10)
    assert signed.status_code == 206 and signed.content == PNG_1PX[:8]
    assert signed.headers["Content-Type"] == "image/png" and signed.headers["Content-Disposition"].startswith("inline;")


def test_an_asset_uploaded_goes_to_the_bucket_and_downloads_by_range(bucket, object_store, api, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    image = png(300, 200)
    upload = SimpleUploadedFile("keyframe.png", image, content_type="application/octet-stream")
    created = api.post("/api/assets/", {"file": upload, "name": "shot 12 keyframe"}, format="multipart")
    assert created.status_code == 201, created.content
    asset_id = created.json()["id"]
    keys = bucket_keys(object_store.endpoint, bucket)
    assert any(key.startswith(f"assets/{asset_id}") for key in keys)

    whole = api.get(f"/api/assets/{asset_id}/content/")
    assert whole.status_code == 200 and whole["Content-Type"] == "image/png" and body(whole) == image
    part = api.get(f"/api/assets/{asset_id}/content/", HTTP_RANGE="bytes=8-15")
    assert part.status_code == 206 and body(part) == image[8:16]


def test_a_live_preview_is_kept_in_the_bucket_and_served_as_an_image(bucket, object_store, api, user):
    job = JobFactory.create(user=user, status=JobStatus.RUNNING)
    assert services.job_preview_store(job, PNG_1PX) is True
    assert f"previews/{job.id}.png" in bucket_keys(object_store.endpoint, bucket)
    response = api.get(f"/api/jobs/{job.id}/preview/")
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert response["Cache-Control"] == "no-store" and body(response) == PNG_1PX


def test_an_object_gone_from_the_bucket_is_a_404(hostile_comfyui, bucket, object_store, api, user):
    from tests.object_store_server import s3_client

    job = video_job(hostile_comfyui, user)
    output = JobOutput.objects.get(job=job, comfy_filename="shot.mp4")
    s3_client(object_store.endpoint).delete_object(Bucket=bucket, Key=output.file.name)
    assert api.get(f"/api/jobs/{job.id}/outputs/{output.pk}/").status_code == 404


def test_filesystem_downloads_answer_ranges_the_same_way(hostile_comfyui, api, user, settings):
    settings.FILE_DOWNLOADS = "stream"
    job = video_job(hostile_comfyui, user)
    video = JobOutput.objects.get(job=job, comfy_filename="shot.mp4")
    assert Path(settings.MEDIA_ROOT, str(video.file.name)).is_file()
    url = f"/api/jobs/{job.id}/outputs/{video.pk}/"
    part = api.get(url, HTTP_RANGE="bytes=262100-262200")
    assert part.status_code == 206 and part["Content-Range"] == f"bytes 262100-262200/{len(VIDEO)}"
    assert body(part) == VIDEO[262100:262201], "across a chunk boundary"
    assert api.get(url, HTTP_RANGE=f"bytes={len(VIDEO)}-").status_code == 416
    assert api.get(url, HTTP_RANGE="bytes=5-2").status_code == 200, "an invalid range is ignored"
    assert api.get(url, HTTP_RANGE="bytes=0-9", HTTP_IF_RANGE='"old"').status_code == 200


def test_an_asset_in_the_bucket_reaches_comfyui_and_the_output_comes_back_to_the_bucket(
    bucket, object_store, api, user, settings, comfyui_sim
):
    from jobs.tracking import job_track
    from tests.media_files import asset_of
    from tests.unit.test_input_assets_tracking import keyframe_workflow, sim_get, submitted

    settings.COMFYUI_BACKENDS = {"default": comfyui_sim.url}
    asset = asset_of(user, png(37, 23, (12, 200, 77)), "keyframe.png")
    assert str(asset.file.name) in bucket_keys(object_store.endpoint, bucket)
    job = submitted(api, keyframe_workflow(asset))
    job_track(str(job.id))
    job.refresh_from_db()

    assert job.status == JobStatus.COMPLETED, job.error_message
    (placed,) = sim_get(comfyui_sim, "/sim/uploads")
    assert placed["sha256"] == asset.sha256, "ComfyUI got the asset's bytes, read from the bucket"
    (output,) = job.outputs.all()
    assert str(output.file.name) in bucket_keys(object_store.endpoint, bucket)


def test_check_deploy_says_whether_the_bucket_answers(bucket, object_store, settings):
    from assets.checks import object_store_reachable_check

    assert object_store_reachable_check(None) == []
    settings.STORAGES = storages_setting(object_store.endpoint, "no-such-bucket")
    (error,) = object_store_reachable_check(None)
    assert "'no-such-bucket'" in error.msg and error.id == "assets.E009"
    settings.STORAGES = storages_setting(object_store.endpoint, bucket)
    object_store.stop()
    try:
        (error,) = object_store_reachable_check(None)
        assert "does not answer" in error.msg and "EndpointConnectionError" in error.msg
    finally:
        object_store.start()
