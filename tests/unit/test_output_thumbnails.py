"""Thumbnails of outputs (issue 15): made when the tracker stores a raster image, small, upright,
from the first frame; never made of what cannot be one (a video, an image bomb, a broken file), and
then simply absent while the output is stored and the job completes. Served as outputs are (the
job's visibility, inert), shown in the admin's job list without a query per row, and made for older
outputs by `make_thumbnails`."""

from __future__ import annotations

import io
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from PIL import Image

from jobs.models import Job, JobOutput, JobStatus
from jobs.thumbnails import output_thumbnail_store
from tests.factories import JobFactory, UserFactory, api_key_for
from tests.hostile_comfyui import HostileComfyUI, image_outputs
from tests.media_files import animation, png
from tests.unit.test_hostile_comfyui_outputs import body, tracked

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/jobs/job/"
SANDBOX = "sandbox; default-src 'none'"


@pytest.fixture(autouse=True)
def _storage_in_memory(settings: Any, tmp_path: Path) -> Iterator[None]:
    """The storage API only: with an in-memory storage, nothing may appear under MEDIA_ROOT."""
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "django.core.files.storage.InMemoryStorage"}}
    settings.MEDIA_ROOT = tmp_path / "media"  # hostile_comfyui sets the same
    yield
    assert not any(Path(settings.MEDIA_ROOT).rglob("*")), "a file was written to a local path"


def decoded(output: JobOutput) -> Image.Image:
    with output.thumbnail.open("rb") as handle:
        image = Image.open(io.BytesIO(handle.read()))
        image.load()
    return image


def stored(job: Job, name: str, content: bytes, media_type: str = "image/png") -> JobOutput:
    """An output as an earlier tracker stored it: without a thumbnail."""
    output = JobOutput(job=job, node_id="9", kind="images", comfy_filename=name, media_type=media_type)
    output.size_bytes = len(content)
    output.file.save(name, ContentFile(content), save=True)
    return output


def jpeg_turned(width: int, height: int, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A valid little PNG whose header claims `width` x `height` pixels (an image bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


# --- made when the tracker stores an output -------------------------------------------------------


def test_the_tracker_stores_a_small_webp_thumbnail_of_an_image_output(hostile_comfyui: HostileComfyUI, api, user):
    job = tracked(hostile_comfyui, image_outputs("9", ["wide.png"]), {"wide.png": png(640, 320, (0, 128, 255))}, user)
    assert job.status == JobStatus.COMPLETED
    (output,) = job.outputs.all()
    name = str(output.thumbnail.name)
    assert name.startswith(f"thumbnails/{job.id}/") and name.endswith(".webp")
    assert default_storage.exists(name), "kept through the storage API"
    image = decoded(output)
    assert (image.format, image.size) == ("WEBP", (160, 80)), "the longest side is 160, the shape kept"
    assert (output.thumbnail_width, output.thumbnail_height) == (160, 80)
    centre = image.convert("RGB").getpixel((80, 40))
    assert isinstance(centre, tuple) and all(abs(a - b) <= 8 for a, b in zip(centre, (0, 128, 255), strict=True))

    (listed,) = api.get(f"/api/jobs/{job.id}/").json()["outputs"]
    assert listed["thumbnail_url"] == f"/api/jobs/{job.id}/outputs/{output.pk}/thumbnail/"
    response = api.get(listed["thumbnail_url"])
    assert response.status_code == 200 and response["Content-Type"] == "image/webp"
    assert response["X-Content-Type-Options"] == "nosniff" and response["Content-Security-Policy"] == SANDBOX
    assert response["Content-Disposition"].startswith("inline;")
    assert body(response)[:4] == b"RIFF"


@pytest.mark.parametrize(
    "name,content,why",
    [
        ("bomb.png", png_claiming(100_000, 100_000), "10 gigapixels claimed: Pillow's own bound"),
        ("big.png", png(400, 300), "past JOB_THUMBNAIL_MAX_PIXELS (set to 100,000 here)"),
        ("cut.png", png(300, 300, (1, 2, 3))[:120], "truncated"),
        ("garbage.jpg", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8, "a JPEG signature, then noise"),
    ],
)
def test_an_image_that_cannot_be_decoded_safely_has_no_thumbnail_and_the_job_completes(
    hostile_comfyui: HostileComfyUI, settings: Any, api: Any, user: Any, name: str, content: bytes, why: str
) -> None:
    settings.JOB_THUMBNAIL_MAX_PIXELS = 100_000
    job = tracked(hostile_comfyui, image_outputs("9", [name, "ok.png"]), {name: content, "ok.png": png(32, 32)}, user)
    assert job.status == JobStatus.COMPLETED, (why, job.error_message)
    outputs = {o.comfy_filename: o for o in job.outputs.all()}
    assert set(outputs) == {name, "ok.png"}, "every output is stored"
    assert not outputs[name].thumbnail and outputs["ok.png"].thumbnail, why
    assert outputs[name].file.read() == content, "the output is kept as ComfyUI sent it"
    (shown,) = [o for o in api.get(f"/api/jobs/{job.id}/").json()["outputs"] if o["comfy_filename"] == name]
    assert shown["thumbnail_url"] is None
    assert api.get(f"/api/jobs/{job.id}/outputs/{outputs[name].pk}/thumbnail/").status_code == 404


def test_no_thumbnail_of_a_video_or_of_a_page_named_like_an_image(hostile_comfyui: HostileComfyUI) -> None:
    outputs = image_outputs("9", ["page.png"]) | {
        "5": {"gifs": [{"filename": "clip.mp4", "subfolder": "", "type": "output"}]}
    }
    mp4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(200)
    job = tracked(hostile_comfyui, outputs, {"page.png": b"<html><script>alert(1)</script></html>", "clip.mp4": mp4})
    assert job.status == JobStatus.COMPLETED
    assert [bool(o.thumbnail) for o in job.outputs.all()] == [False, False]


def test_a_thumbnail_is_upright_and_of_the_first_frame(user: Any) -> None:
    job = JobFactory.create(user=user, status=JobStatus.COMPLETED)
    turned = stored(job, "turned.jpg", jpeg_turned(320, 160, orientation=6), "image/jpeg")
    frames = stored(job, "loop.gif", animation("GIF", 3, 64, 64), "image/gif")
    clear = stored(job, "clear.png", png(64, 64, (0, 0, 0, 0), mode="RGBA"))

    for output in (turned, frames, clear):
        assert output_thumbnail_store(output), output.comfy_filename
        output.refresh_from_db()
    assert decoded(turned).size == (80, 160), "EXIF orientation 6: the camera was turned a quarter"
    assert decoded(frames).convert("RGB").getpixel((10, 10)) == (0, 0, 0), "the first frame's colour"
    assert decoded(clear).getpixel((10, 10))[3] == 0, "transparency kept"


# --- who may see it ---------------------------------------------------------------------------------


def test_a_thumbnail_is_seen_by_whoever_may_see_the_job(hostile_comfyui: HostileComfyUI, user: Any, client) -> None:
    job = tracked(hostile_comfyui, image_outputs("9", ["a.png"]), {"a.png": png(64, 64)}, user)
    (output,) = job.outputs.all()
    url = f"/api/jobs/{job.id}/outputs/{output.pk}/thumbnail/"
    other = UserFactory.create()
    lead = UserFactory.create(is_staff=True)
    lead.user_permissions.add(Permission.objects.get(codename="view_job"))

    def status(who: Any, path: str) -> int:
        return client.get(path, headers={"Authorization": f"Bearer {api_key_for(who)}"}).status_code

    assert status(user, url) == 200 and status(other, url) == 404 and status(lead, url) == 200
    admin_url = f"/admin/jobs/job/{job.id}/outputs/{output.pk}/thumbnail/"
    client.force_login(lead)
    response = client.get(admin_url)
    assert response.status_code == 200 and response["Content-Type"] == "image/webp"
    assert response["Content-Security-Policy"] == SANDBOX
    client.force_login(UserFactory.create(is_staff=True))  # staff, without the permission to view jobs
    assert client.get(admin_url).status_code == 404


# --- the admin's job list --------------------------------------------------------------------------


def completed_with_outputs(outputs: dict[str, tuple[bytes, str]]) -> Job:
    job = JobFactory.create(status=JobStatus.COMPLETED)
    for name, (content, media_type) in outputs.items():
        output_thumbnail_store(stored(job, name, content, media_type))
    return job


def test_the_job_list_shows_the_first_outputs_thumbnail_or_its_kind(admin_client) -> None:
    image = completed_with_outputs({"first.png": (png(320, 160), "image/png"), "second.png": (png(8, 8), "image/png")})
    video = completed_with_outputs({"clip.mp4": (b"\x00\x00\x00\x18ftypmp42" + bytes(64), "video/mp4")})
    waiting = JobFactory.create()
    html = admin_client.get(CHANGELIST).content.decode()

    first = image.outputs.order_by("id").first()
    assert first is not None
    (img,) = re.findall(r'<img class="output-thumbnail"[^>]*>', html)
    assert f'src="/admin/jobs/job/{image.id}/outputs/{first.pk}/thumbnail/"' in img
    assert 'width="80" height="40"' in img and 'loading="lazy"' in img and 'alt="first.png"' in img
    assert admin_client.get(f"/admin/jobs/job/{image.id}/outputs/{first.pk}/thumbnail/").status_code == 200
    assert '<span class="output-kind"' in html and ">video</span>" in html, f"job {video.id}: its kind, no picture"
    assert str(waiting.id)[:8] in html


def test_the_job_lists_queries_do_not_grow_with_the_page(admin_client, settings) -> None:
    def queries_for_page() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get(CHANGELIST).status_code == 200
        return len(queries)

    for index in range(2):
        completed_with_outputs({f"a{index}.png": (png(16, 16), "image/png"), f"b{index}.png": (png(8, 8), "image/png")})
    queries_for_page()  # the first page of a session also reads what the admin caches
    few = queries_for_page()
    for index in range(12):
        completed_with_outputs({f"c{index}.png": (png(16, 16), "image/png")})
    assert queries_for_page() == few, "one query for the first outputs of the whole page"
    assert len(re.findall(r'<img class="output-thumbnail"', admin_client.get(CHANGELIST).content.decode())) == 14


def test_the_job_page_shows_stored_thumbnails(admin_client) -> None:
    job = completed_with_outputs({"a.png": (png(320, 160), "image/png")})
    (output,) = job.outputs.all()
    html = admin_client.get(f"/admin/jobs/job/{job.id}/change/").content.decode()
    assert f'src="/admin/jobs/job/{job.id}/outputs/{output.pk}/thumbnail/" width="160" height="80"' in html


# --- older outputs -----------------------------------------------------------------------------------


def test_make_thumbnails_fills_in_older_outputs_in_batches_and_can_start_again() -> None:
    job = JobFactory.create(status=JobStatus.COMPLETED)
    images = [stored(job, f"old{index}.png", png(40, 20)) for index in range(5)]
    broken = stored(job, "broken.png", b"\x89PNG\r\n\x1a\n" + bytes(40))
    video = stored(job, "clip.mp4", b"\x00\x00\x00\x18ftypmp42" + bytes(64), "video/mp4")

    out = io.StringIO()
    call_command("make_thumbnails", "--batch", "2", "--limit", "3", stdout=out)
    assert sum(bool(JobOutput.objects.get(pk=o.pk).thumbnail) for o in images) == 3, "stops at its limit"
    assert "up to output" in out.getvalue()

    out = io.StringIO()
    call_command("make_thumbnails", "--batch", "2", stdout=out)  # started again: picks up the rest
    assert all(JobOutput.objects.get(pk=o.pk).thumbnail for o in images)
    assert not JobOutput.objects.get(pk=broken.pk).thumbnail and not JobOutput.objects.get(pk=video.pk).thumbnail
    assert out.getvalue().splitlines()[-1] == f"done: 2 thumbnails made, 1 outputs without one; last output {broken.pk}"

    out = io.StringIO()
    call_command("make_thumbnails", "--after", str(broken.pk), stdout=out)
    assert out.getvalue().strip() == f"done: 0 thumbnails made, 0 outputs without one; last output {broken.pk}"
