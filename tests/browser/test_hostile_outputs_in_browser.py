"""A hostile ComfyUI output opened from the admin cannot run script on the project's origin.

Outputs named x.html and x.svg whose script, run on our origin, would set a cookie, write
localStorage and retry a job through the admin with the staff user's session (issue 11). First a
control shows those side effects are seen when the script does run on the origin; then a staff user
opens the outputs from the job page, both ones stored by today's tracker (type sniffed from the
bytes) and ones stored before (type taken from the name), and none of the side effects happen.

Nothing touches the ORM while the browser is open (see test_admin_in_browser.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile

from jobs.models import Job, JobOutput, JobStatus
from jobs.tracking import job_track
from tests.browser.test_admin_in_browser import PASSWORD, THUMBNAIL_LOADED, chromium, log_in, shot
from tests.factories import JobFactory
from tests.hostile_comfyui import PNG_1PX, HostileComfyUI, history_entry, image_outputs

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def hostile_script(victim: Job) -> str:
    """What the outputs' script does when it runs on our origin: visible effects, all of them."""
    return f"""
document.cookie = "pwned=1; path=/";
localStorage.setItem("pwned", "1");
const csrf = (document.cookie.match(/csrftoken=([^;]+)/) || [])[1] || "";
fetch("/admin/jobs/job/{victim.pk}/retry/", {{method: "POST", credentials: "include",
    headers: {{"X-CSRFToken": csrf, "Content-Type": "application/x-www-form-urlencoded"}}}});
"""


def hostile_files(victim: Job) -> dict[str, bytes]:
    script = hostile_script(victim)
    html = f"<!doctype html><html><body><h1>hi</h1><script>{script}</script></body></html>".encode()
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="20" height="20">'
        f"<script>{script}</script><rect width='20' height='20'/></svg>"
    ).encode()
    return {"x.html": html, "x.svg": svg, "ok.png": PNG_1PX}


def tracked_job(settings: Any, files: dict[str, bytes]) -> Job:
    """Stored by today's tracker from a hostile ComfyUI (in this process, before the browser opens)."""
    comfyui = HostileComfyUI().start()
    try:
        settings.COMFYUI_BACKENDS = {**settings.COMFYUI_BACKENDS, "hostile": comfyui.url}
        comfyui.entry = history_entry(image_outputs("9", list(files)))
        comfyui.files = dict(files)
        job = JobFactory.create(backend="hostile")
        job_track(str(job.id))
    finally:
        comfyui.stop()
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED, job.error_message
    return job


def legacy_job(files: dict[str, bytes]) -> Job:
    """Stored as the code before issue 11 did: the type from the name, the name's extension kept."""
    job = JobFactory.create(status=JobStatus.COMPLETED)
    for name, content in files.items():
        output = JobOutput(job=job, node_id="9", kind="images", comfy_filename=name, media_type=_type_by_name(name))
        output.file.save(name, ContentFile(content), save=False)
        output.save()
    return job


def _type_by_name(name: str) -> str:
    return {"x.html": "text/html", "x.svg": "image/svg+xml", "ok.png": "image/png"}[name]


def test_hostile_outputs_cannot_run_script_on_our_origin(live, web_server, settings):
    get_user_model().objects.create_superuser("director", password=PASSWORD)
    victim = JobFactory.create(status=JobStatus.FAILED)
    files = hostile_files(victim)
    jobs = [tracked_job(settings, files), legacy_job(files)]

    # The control: the same script, run on our origin, does everything this test looks for.
    with chromium() as browser:
        page = browser.new_page()
        log_in(page, web_server)
        page.evaluate(hostile_script(victim))
        page.wait_for_function("() => document.cookie.includes('pwned=1')")
        assert page.evaluate("localStorage.getItem('pwned')") == "1"
        page.wait_for_timeout(1000)  # the retry request
    assert Job.objects.filter(retry_of=victim).count() == 1, "the control's retry did not happen"

    with chromium() as browser:
        context = browser.new_context(accept_downloads=True)
        page = context.new_page()
        log_in(page, web_server)
        assert not _pwned(context, page), "the control's marks are in a browser of its own"
        for job in jobs:
            _open_every_output(page, web_server, job, files)
        page.goto(f"{web_server}/admin/")
        page.wait_for_timeout(1000)  # time for any script that did run to reach the server
        assert not _pwned(context, page), "a hostile output ran script on our origin"
        context.close()

    assert Job.objects.filter(retry_of=victim).count() == 1, "a hostile output retried a job as the staff user"


def _open_every_output(page: Any, base: str, job: Job, files: dict[str, bytes]) -> None:
    page.goto(f"{base}/admin/jobs/job/{job.pk}/change/")
    # The outputs are below the fold of a long job page, and their images load lazily: scroll to them.
    page.locator("#job-outputs").scroll_into_view_if_needed()
    page.wait_for_function(THUMBNAIL_LOADED, timeout=15_000)
    assert page.locator("img.output-thumb").count() == 1, "a thumbnail for the PNG only"
    links = page.locator("a.output-link")
    assert links.count() == 2
    for index in range(links.count()):
        link = links.nth(index)
        url = f"{base}{link.get_attribute('href')}"
        with page.expect_download() as download_info:
            link.click()
        download = download_info.value
        assert download.suggested_filename == "x.bin", download.suggested_filename
        assert Path(download.path()).read_bytes() in (files["x.html"], files["x.svg"]), "nothing lost"
        answer = page.context.request.get(url)
        assert answer.headers["content-type"] == "application/octet-stream"
        assert answer.headers["content-disposition"].startswith("attachment;")
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["content-security-policy"] == "sandbox; default-src 'none'"
        # Opened by address in a frame of our own page: still a download, never a document.
        page.evaluate(
            "url => { const f = document.createElement('iframe'); f.src = url; document.body.appendChild(f); }", url
        )
    shot(page, f"hostile-outputs-{str(job.pk)[:8]}")


def _pwned(context: Any, page: Any) -> bool:
    cookies = {cookie["name"] for cookie in context.cookies()}
    return "pwned" in cookies or page.evaluate("localStorage.getItem('pwned')") is not None
