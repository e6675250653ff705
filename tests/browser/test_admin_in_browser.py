"""The admin dashboard in a real browser: Debian's chromium driven by Playwright, against daphne,
the Celery GPU worker and the ComfyUI simulator. Screenshots go to test-artifacts/.

Nothing here touches the ORM while the browser is open: Playwright's sync API runs an event loop
in this thread, and Django (rightly) refuses database calls from one. The job is submitted and
followed over REST, as a client would.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from django.contrib.auth import get_user_model
from django.core.management import call_command

from jobs.models import NodeTiming
from tests.factories import api_key_for
from tests.integration.test_job_lifecycle import sleep_workflow
from tests.system import ARTIFACTS

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    # Without these Chromium keeps trying to reach the internet (docs/HAZARDS.md).
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "a-director-password-1"
THUMBNAIL_LOADED = """() => {
    const img = document.querySelector('img.output-thumb');
    return img !== null && img.complete && img.naturalWidth > 0;
}"""


def job_outputs(web_server: str, job_id: str, token: str) -> list[dict[str, Any]]:
    response = requests.get(f"{web_server}/api/jobs/{job_id}/", headers={"Authorization": f"Token {token}"}, timeout=10)
    response.raise_for_status()
    return list(response.json()["outputs"])


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's chromium under Playwright; never `playwright install` (no browser downloads here)."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: apt-get install -y chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"browser-{name}.png"), full_page=True)


def log_in(page, base: str) -> None:
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", "director")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#dashboard-links")


def follow_live_row(page, job_id: str, timeout: float = 60.0) -> tuple[list[float], dict]:
    """Sample the job's row on the live queue page until it shows a final status."""
    row = page.locator(f'tr[data-job-id="{job_id}"]')
    row.wait_for(timeout=20_000)
    widths: list[float] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = row.evaluate(
            """tr => ({status: tr.dataset.status,
                       width: parseFloat(tr.querySelector('.progress-fill').style.width),
                       finished: tr.closest('#live-finished') !== null})"""
        )
        widths.append(state["width"])
        if state["status"] in ("completed", "failed", "cancelled"):
            return widths, state
        page.wait_for_timeout(80)
    raise AssertionError(f"job {job_id} did not finish on the live page; widths seen: {sorted(set(widths))}")


def test_dashboard_in_a_real_browser(live, web_server):
    director = get_user_model().objects.create_superuser("director", password=PASSWORD)
    token = api_key_for(director)
    # A few days of finished history, so the statistics have something to draw.
    call_command("generate_history", jobs=200, days=3, users=3, stdout=io.StringIO())

    with chromium() as browser:
        job_id, shown_timings = _walk_through_the_dashboard(browser, web_server, token)

    # One timing per executed node (none of this job's nodes could come from ComfyUI's cache).
    recorded = NodeTiming.objects.filter(job_id=job_id).count()
    assert recorded == shown_timings == len(sleep_workflow(1.0)), (recorded, shown_timings)


def _walk_through_the_dashboard(browser: Any, web_server: str, token: str) -> tuple[str, int]:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    log_in(page, web_server)

    # Generation statistics: server-side SVG charts with bars and points.
    page.goto(f"{web_server}/admin/dashboard/statistics/?days=7")
    assert page.locator("svg.chart").count() >= 8
    bars = page.locator("svg.bar-chart rect.bar")
    assert bars.count() > 10
    heights = bars.evaluate_all("bars => bars.map(bar => bar.getBoundingClientRect().height)")
    assert sum(1 for height in heights if height > 1) > 10, "bars are drawn, not just present"
    assert page.locator("svg.line-chart circle.point").count() > 0
    assert page.locator("svg.hbar-chart rect.bar").count() > 0  # slowest node classes
    shot(page, "statistics")

    # Live queue: a job submitted over REST appears, its bar moves, it finishes, with no reload.
    page.goto(f"{web_server}/admin/dashboard/live-queue/")
    page.wait_for_function("document.getElementById('live-connection').textContent === 'connected'")
    page.evaluate("window.sameDocument = true")
    response = requests.post(
        f"{web_server}/api/jobs/",
        json={"workflow": sleep_workflow(4.0, prefix="browser"), "job_type": "image"},
        headers={"Authorization": f"Token {token}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    widths, final = follow_live_row(page, job_id)
    moving = sorted({w for w in widths if 0 < w < 100})
    assert len(moving) >= 3, f"the progress bar did not move live: {sorted(set(widths))}"
    assert final == {"status": "completed", "width": 100.0, "finished": True}, final
    assert page.evaluate("window.sameDocument") is True, "the page reloaded"
    shot(page, "live-queue")

    # The job page: its output thumbnail loads, its timeline and node timings are there. The
    # thumbnail is made just after the job's end is sent (jobs.services.job_thumbnails_make).
    deadline = time.monotonic() + 15
    while not any(output["thumbnail_url"] for output in job_outputs(web_server, job_id, token)):
        assert time.monotonic() < deadline, "no thumbnail 15 s after the job completed"
        time.sleep(0.05)
    page.locator(f'tr[data-job-id="{job_id}"] a').click()
    page.wait_for_url(f"**/admin/jobs/job/{job_id}/change/")
    page.wait_for_function(THUMBNAIL_LOADED, timeout=15_000)
    kinds = page.locator("tr.timeline-event").evaluate_all("rows => rows.map(row => row.dataset.kind)")
    assert "node_started" in kinds and "node_finished" in kinds, kinds
    shown_timings = page.locator("tr.node-timing").count()
    shot(page, "job")
    page.close()
    return job_id, shown_timings
