"""ComfyUI's own web editor (the pinned comfyui-frontend-package) served by the project at /comfy/, in
Debian's chromium: an artist logs in through the project, loads a workflow, presses Queue, and the
job runs on the fleet (daphne, the GPU worker, the simulator): the editor's running-node state
follows the nodes, its progress bar (the running node's steps) moves, and the saved image loads
from /comfy/view on the SaveImage node and in the queue panel's finished job. The job is the
artist's in the project.

The ORM is touched only before and after the browser (Playwright's loop runs in this thread).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from comfy_api.models import EditorFile, EditorSettings, FrontDoorPrompt
from jobs.models import JobStatus
from tests.browser.test_admin_in_browser import chromium, shot
from tests.integration.test_job_lifecycle import sleep_workflow

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PASSWORD = "an-artist-password-1"
EDITOR_READY = "() => !!(window.app && window.app.graph && window.app.api && window.app.api.socket"
EDITOR_READY += " && window.app.api.socket.readyState === 1)"
SAMPLE = """() => {
    const node = window.app.graph.getNodeById(3);
    const img = node && node.imgs && node.imgs[0];
    return {
        running: window.app.runningNodeId == null ? null : String(window.app.runningNodeId),
        bars: [...document.querySelectorAll('[style*="job-progress-secondary"], [style*="job-progress-primary"]')]
            .map(bar => (bar.style.background.includes("secondary") ? "node " : "total ") + bar.style.width),
        image: img ? {src: img.src, loaded: img.complete && img.naturalWidth > 0} : null,
    };
}"""
LISTED_IMAGE = """() => [...document.querySelectorAll("img")]
    .some(el => el.src.includes("/comfy/api/view?") && el.complete && el.naturalWidth > 0)"""


def test_the_editor_queues_a_workflow_on_the_fleet_and_shows_it_run(live, web_server):
    # An artist, not staff: the admin would not let them in; the project's login does.
    artist = get_user_model().objects.create_user("storyboard", password=PASSWORD)
    # A returning artist: a first visit opens the templates browser (empty: none served) over the canvas.
    EditorSettings.objects.create(user=artist, values={"Comfy.TutorialCompleted": True})
    prompt = sleep_workflow(3.0, prefix="editor")

    with chromium() as browser:
        samples, failed_requests = _queue_in_the_editor(browser, web_server, prompt)

    running = [sample["running"] for sample in samples]
    seen_running = [node for index, node in enumerate(running) if node and node not in running[:index]]
    assert "2" in seen_running, f"the sleeping node was never the running node: {seen_running}"
    # The queue overlay's bar of the running node's steps (ComfyUI's `progress` messages).
    widths = sorted({float(bar[5:-1]) for sample in samples for bar in sample["bars"] if bar.startswith("node ")})
    assert len([width for width in widths if 0 < width < 100]) >= 3, f"the progress bar did not move: {widths}"
    image = samples[-1]["image"]
    assert image and image["loaded"] and "/comfy/api/view?" in image["src"], image
    assert samples[-1]["listed"], f"the finished job's image is not in the queue panel; {failed_requests}"
    assert not [line for line in failed_requests if not line.startswith("(")], failed_requests

    assert "(saved) 200" in failed_requests, failed_requests
    saved = EditorFile.objects.get(user=artist)
    assert saved.path == "workflows/shot 010.json"
    assert len(json.loads(bytes(saved.content))["nodes"]) == 3

    entry = FrontDoorPrompt.objects.select_related("job").get(user=artist)
    assert entry.job.user == artist and entry.job.status == JobStatus.COMPLETED
    assert entry.job.outputs.count() == 1


def _queue_in_the_editor(browser: Any, base: str, prompt: dict) -> tuple[list[dict], list[str]]:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    failed: list[str] = []
    # The queue panel's finished jobs come from /history: its answers, to tell why if no image shows.
    page.on("response", lambda r: failed.append(f"(seen) {r.status} {r.url}") if "/api/history" in r.url else None)
    page.on(
        "response",
        lambda r: failed.append(f"{r.status} {r.url}") if "/comfy/api/" in r.url and r.status >= 500 else None,
    )
    page.goto(f"{base}/comfy/")
    assert "/accounts/login/" in page.url, "not logged in: the project's login, then back"
    page.fill("#id_username", "storyboard")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/comfy/")
    page.wait_for_function(EDITOR_READY, timeout=60_000)

    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text[:300]}"))
    page.evaluate("prompt => window.app.loadApiJson(prompt, 'editor-test.json')", prompt)
    try:
        page.wait_for_function("() => window.app.graph.nodes.length === 3", timeout=15_000)
    except Exception as exc:
        count = page.evaluate("() => window.app.graph.nodes.map(n => n.type)")
        raise AssertionError(f"the workflow did not load: {count}; console: {console[-15:]}") from exc
    shot(page, "comfy-editor-loaded")
    page.locator('[data-testid="queue-button"]').first.click()

    samples: list[dict] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        sample = page.evaluate(SAMPLE)
        samples.append(sample)
        if sample["image"] and sample["image"]["loaded"]:
            break
        if sample["running"] is not None and len(samples) % 20 == 0:
            shot(page, "comfy-editor-running")
        page.wait_for_timeout(50)
    # The job queue panel: the finished job with its image.
    page.locator('button[aria-label="Expand job queue"]').first.click()
    try:
        page.wait_for_function(LISTED_IMAGE, timeout=15_000)
        samples[-1]["listed"] = True
    except PlaywrightTimeout:
        samples[-1]["listed"] = False
    shot(page, "comfy-editor-done")

    # Save the workflow as an artist does (Save, accept the proposed name): it is kept as theirs.
    with page.expect_response(
        lambda r: "/comfy/api/userdata/workflows" in r.url and r.request.method == "POST"
    ) as saved:
        page.evaluate("() => { window.app.extensionManager.command.execute('Comfy.SaveWorkflow'); }")
        page.locator(".p-dialog input").first.wait_for(timeout=10_000)
        page.locator(".p-dialog input").first.fill("shot 010")
        page.keyboard.press("Enter")
    failed.append(f"(saved) {saved.value.status}")
    page.close()
    return samples, failed
