"""What ComfyUI returns is untrusted (issue 11): hostile outputs, sent by a fake ComfyUI to the real
tracker in this process, each with its clear outcome and nothing lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jobs.models import EventKind, FailureCategory, Job, JobStatus
from jobs.tracking import job_track
from tests.factories import JobFactory, UserFactory
from tests.hostile_comfyui import (
    HTML_WITH_SCRIPT,
    PNG_1PX,
    SVG_WITH_SCRIPT,
    HostileComfyUI,
    history_entry,
    image_outputs,
)

pytestmark = pytest.mark.django_db

MP4_HEAD = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
MIB = 1024 * 1024
SANDBOX = "sandbox; default-src 'none'"


def tracked(hostile_comfyui: HostileComfyUI, outputs: dict, files: dict | None = None, user=None) -> Job:
    """A job followed by the real tracker to its end, ComfyUI's history saying what `outputs` says."""
    hostile_comfyui.entry = history_entry(outputs)
    hostile_comfyui.files.update(files or {})
    job = JobFactory.create(user=user) if user is not None else JobFactory.create()
    job_track(str(job.id))
    job.refresh_from_db()
    return job


def stored_files(settings) -> list[Path]:
    root = Path(settings.MEDIA_ROOT, "outputs")
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def notes(job: Job, reason: str) -> list[dict]:
    return [e.data for e in job.events.filter(kind=EventKind.NOTE) if e.data.get("reason") == reason]


def body(response) -> bytes:
    return b"".join(response.streaming_content)


def test_html_svg_and_xml_outputs_download_inert_whatever_their_names_say(hostile_comfyui, settings, api, user):
    names = ["x.html", "x.svg", "x.xhtml", "x.xml", "really_html.png", "ok.png"]
    files = {
        "x.html": HTML_WITH_SCRIPT,
        "x.svg": SVG_WITH_SCRIPT,
        "x.xhtml": HTML_WITH_SCRIPT,
        "x.xml": SVG_WITH_SCRIPT,
        "really_html.png": HTML_WITH_SCRIPT,
        "ok.png": PNG_1PX,
    }
    job = tracked(hostile_comfyui, image_outputs("9", names), files, user=user)

    assert job.status == JobStatus.COMPLETED
    outputs = {o.comfy_filename: o for o in job.outputs.all()}
    assert set(outputs) == set(names), "every output is kept"
    for name in names[:-1]:
        assert outputs[name].media_type == "application/octet-stream", name
        assert str(outputs[name].file).endswith(".bin"), "stored under a generated name with the sniffed extension"
    assert outputs["ok.png"].media_type == "image/png" and str(outputs["ok.png"].file).endswith(".png")
    assert all(str(o.file).startswith(f"outputs/{job.id}/") for o in outputs.values())

    for name in names[:-1]:
        response = api.get(f"/api/jobs/{job.id}/outputs/{outputs[name].pk}/")
        assert response.status_code == 200
        assert response["Content-Type"] == "application/octet-stream", name
        assert response["Content-Disposition"].startswith("attachment;"), name
        assert ".bin" in response["Content-Disposition"] and ".html" not in response["Content-Disposition"]
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Content-Security-Policy"] == SANDBOX
        assert body(response) == files[name], "the bytes are kept as ComfyUI sent them"
    image = api.get(f"/api/jobs/{job.id}/outputs/{outputs['ok.png'].pk}/")
    assert image["Content-Type"] == "image/png" and image["Content-Disposition"].startswith("inline;")
    assert image["X-Content-Type-Options"] == "nosniff" and image["Content-Security-Policy"] == SANDBOX
    assert body(image) == PNG_1PX


def test_output_past_the_byte_cap_is_not_stored_and_the_timeline_says_why(hostile_comfyui, settings):
    settings.JOB_OUTPUT_MAX_BYTES = MIB

    async def three_mib() -> AsyncIterator[bytes]:
        yield MP4_HEAD + bytes(MIB - len(MP4_HEAD))
        for _ in range(2):
            yield bytes(MIB)

    outputs = {"5": {"videos": [{"filename": "long.mp4", "subfolder": "", "type": "output"}]}}
    outputs |= image_outputs("9", ["ok.png"])
    job = tracked(hostile_comfyui, outputs, {"long.mp4": three_mib, "ok.png": PNG_1PX})

    assert job.status == JobStatus.COMPLETED, job.error_message
    assert [o.comfy_filename for o in job.outputs.all()] == ["ok.png"]
    (note,) = notes(job, "too_large")
    assert "long.mp4" in note["output_skipped"] and f"larger than {MIB} bytes" in note["message"]
    assert [p.suffix for p in stored_files(settings)] == [".png"], "nothing partial is left in storage"


def test_job_whose_only_output_is_too_large_fails_output_missing(hostile_comfyui, settings):
    settings.JOB_OUTPUT_MAX_BYTES = 1000
    job = tracked(hostile_comfyui, image_outputs("9", ["huge.png"]), {"huge.png": PNG_1PX + bytes(5000)})

    assert job.status == JobStatus.FAILED
    assert job.failure_category == FailureCategory.OUTPUT_MISSING
    assert "1 larger than 1000 bytes" in job.error_message
    assert notes(job, "too_large") and stored_files(settings) == []


def test_outputs_past_the_count_cap_are_named_on_the_timeline_as_skipped(hostile_comfyui, settings, api, user):
    names = [f"frame_{n:05d}_.png" for n in range(2000)]
    hostile_comfyui.any_file = PNG_1PX
    job = tracked(hostile_comfyui, image_outputs("9", names), user=user)

    assert job.status == JobStatus.COMPLETED
    stored = list(job.outputs.values_list("comfy_filename", flat=True))
    assert len(stored) == settings.JOB_MAX_OUTPUTS == 200
    (note,) = notes(job, "too_many")
    assert note["skipped"] == 1800 and note["unlisted"] == 0
    skipped = [label.rsplit(" ", 1)[1] for label in note["outputs_skipped"]]
    assert sorted(stored + skipped) == names, "every output is either stored or named as skipped"
    assert len(hostile_comfyui.views) == 200, "skipped outputs are never fetched"
    detail = api.get(f"/api/jobs/{job.id}/")
    assert len(detail.json()["outputs"]) == 200


def test_output_streams_into_storage_as_it_downloads(hostile_comfyui, settings):
    # No spool-and-copy: the stored file grows while ComfyUI is still sending (a 2 GiB output once
    # took 4 GiB of disk for a moment). The fake holds its second half back until storage has the first.
    seen_growing: list[int] = []

    async def two_mib() -> AsyncIterator[bytes]:
        yield MP4_HEAD + bytes(MIB - len(MP4_HEAD))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            sizes = [p.stat().st_size for p in stored_files(settings)]
            if sizes and sizes[0] >= MIB:
                seen_growing.append(sizes[0])
                break
            await asyncio.sleep(0.02)
        yield bytes(MIB)

    outputs = {"5": {"videos": [{"filename": "clip.mp4", "subfolder": "", "type": "output"}]}}
    job = tracked(hostile_comfyui, outputs, {"clip.mp4": two_mib})

    assert job.status == JobStatus.COMPLETED
    assert seen_growing, "the first megabyte was not in storage before the download ended"
    (output,) = job.outputs.all()
    assert output.media_type == "video/mp4" and output.size_bytes == 2 * MIB
    assert str(output.file).endswith(".mp4") and output.file.size == 2 * MIB


def test_redirect_from_view_is_never_followed(hostile_comfyui, settings):
    hostile_comfyui.redirects = {"moved.png": f"{hostile_comfyui.url}/view?filename=secret.png&type=output"}
    hostile_comfyui.files["secret.png"] = PNG_1PX
    job = tracked(hostile_comfyui, image_outputs("9", ["moved.png", "ok.png"]), {"ok.png": PNG_1PX})

    assert "secret.png" not in hostile_comfyui.views, "the redirect was followed"
    assert job.status == JobStatus.FAILED and job.failure_category == FailureCategory.OUTPUT_MISSING
    assert "moved.png" in job.error_message and "redirect" in job.error_message
    assert [o.comfy_filename for o in job.outputs.all()] == ["ok.png"], "the fetchable output is kept"
    assert notes(job, "unfetchable")


def test_nul_bytes_and_overlong_names_from_comfyui_are_stored_cleaned_and_cut(hostile_comfyui, settings):
    long_name = "n" * 400 + ".png"
    outputs = image_outputs("9", ["ab\x00c.png", long_name])
    outputs["9"]["images"][0]["subfolder"] = "sub\x00folder"
    outputs["x" * 100] = outputs.pop("9")  # a node id longer than its column
    hostile_comfyui.any_file = PNG_1PX
    job = tracked(hostile_comfyui, outputs)

    assert job.status == JobStatus.COMPLETED, job.error_message
    names = sorted(job.outputs.values_list("comfy_filename", flat=True))
    assert names[0] == "abc.png" and len(names[1]) <= 255 and names[1].startswith("nnnn")
    assert set(job.outputs.values_list("comfy_subfolder", flat=True)) == {"subfolder", ""}
    assert all(len(node_id) <= 64 for node_id in job.outputs.values_list("node_id", flat=True))
    # Fetched again under the names ComfyUI listed (cleaned), not under anything cut to fit.
    assert long_name in hostile_comfyui.views


def test_a_second_tracker_stores_nothing_twice(hostile_comfyui, settings):
    hostile_comfyui.any_file = PNG_1PX
    job = tracked(hostile_comfyui, image_outputs("9", ["a.png", "b.png"]))
    Job.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING, heartbeat_at=None, finished_at=None)
    job_track(str(job.id))
    job.refresh_from_db()

    assert job.status == JobStatus.COMPLETED
    assert job.outputs.count() == 2 and len(stored_files(settings)) == 2


def test_preview_that_is_no_image_is_dropped_and_previews_are_served_sandboxed(settings, tmp_path, api, user):
    from jobs import services

    settings.MEDIA_ROOT = tmp_path / "media"
    job = JobFactory.create(user=user, status=JobStatus.RUNNING)
    assert services.job_preview_store(job, SVG_WITH_SCRIPT) is False
    assert api.get(f"/api/jobs/{job.id}/preview/").status_code == 404
    assert services.job_preview_store(job, PNG_1PX) is True
    response = api.get(f"/api/jobs/{job.id}/preview/")
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff" and response["Content-Security-Policy"] == SANDBOX
    assert body(response) == PNG_1PX


def test_outputs_stored_before_sniffing_are_served_by_their_bytes(settings, tmp_path, api, user):
    """Rows written by the old code carry the type their name suggested: text/html, image/svg+xml."""
    from django.core.files.base import ContentFile

    from jobs.models import JobOutput

    settings.MEDIA_ROOT = tmp_path / "media"
    job = JobFactory.create(user=user, status=JobStatus.COMPLETED)
    old = {}
    for name, media_type, content in [
        ("x.html", "text/html", HTML_WITH_SCRIPT),
        ("x.svg", "image/svg+xml", SVG_WITH_SCRIPT),
        ("old.png", "image/png", PNG_1PX),
    ]:
        output = JobOutput(job=job, node_id="9", kind="images", comfy_filename=name, media_type=media_type)
        output.file.save(name, ContentFile(content), save=False)
        output.save()
        old[name] = output

    for name in ("x.html", "x.svg"):
        response = api.get(f"/api/jobs/{job.id}/outputs/{old[name].pk}/")
        assert response["Content-Type"] == "application/octet-stream"
        assert response["Content-Disposition"].startswith("attachment;")
        assert response["Content-Security-Policy"] == SANDBOX
    image = api.get(f"/api/jobs/{job.id}/outputs/{old['old.png'].pk}/")
    assert image["Content-Type"] == "image/png" and body(image) == PNG_1PX


def test_the_admin_shows_thumbnails_only_for_sniffed_raster_images(hostile_comfyui, settings, client):
    staff = UserFactory.create(is_staff=True, is_superuser=True)
    client.force_login(staff)
    job = tracked(
        hostile_comfyui, image_outputs("9", ["x.svg", "ok.png"]), {"x.svg": SVG_WITH_SCRIPT, "ok.png": PNG_1PX}
    )
    page = client.get(f"/admin/jobs/job/{job.id}/change/").content.decode()
    thumbnails = page.count('class="output-thumb"')
    assert thumbnails == 1 and 'alt="ok.png"' in page
    assert "x.svg" in page, "the SVG is listed, as a download link"
