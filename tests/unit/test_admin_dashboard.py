"""The admin as the studio's dashboard: job history, the job page, actions, failures, backends, live queue."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest
from django.contrib.auth.models import Permission
from django.core.files.base import ContentFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from fleet.models import Backend
from jobs import services
from jobs.models import FailureCategory, Job, JobAttempt, JobEvent, JobOutput, JobStatus, NodeTiming
from monitoring.models import BackendHealthSample
from monitoring.rollups import stats_rollup_refresh
from tests.factories import JobFactory, UserFactory
from tests.unit.test_stats import finished_job

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/jobs/job/"


def page(client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return response.content.decode()


def listed_ids(html: str) -> set[str]:
    return set(re.findall(r'name="_selected_action" value="([0-9a-f-]{36})"', html))


def links(html: str, pattern: str) -> list[str]:
    return [unescape(href) for href in re.findall(r'href="([^"]*)"', html) if re.search(pattern, unescape(href))]


# --- job history -----------------------------------------------------------------------------


def test_job_list_shows_status_progress_and_durations(admin_client):
    job = finished_job(status=JobStatus.FAILED, category=FailureCategory.OUT_OF_MEMORY, wait=12, run=70)
    html = page(admin_client, CHANGELIST)
    assert str(job.id)[:8] in html
    assert 'class="status-badge"' in html and "Failed" in html
    assert 'class="job-progress"' in html
    assert '<td class="field-wait">12s</td>' in html and "1m 10s" in html  # queue wait, run time
    assert "Out of memory" in html


def test_job_list_and_page_show_times_to_the_second_in_the_projects_time_zone(admin_client, settings):
    settings.TIME_ZONE = "Europe/Paris"
    finished = datetime(2025, 12, 5, 13, 3, 27, 600_000, tzinfo=UTC)
    job = finished_job(finished_at=finished, wait=3725, run=4)
    html = page(admin_client, CHANGELIST)
    # Paris is UTC+1 in December; created is 3725.1 s before the submission, 4 s before the finish.
    assert "2025-12-05 14:03:27" in html and "2025-12-05 14:03:23" in html and "2025-12-05 13:01:18" in html
    assert "1h 02m 05s" in html and '<td class="field-run_time">4s</td>' in html
    assert 'class="sortable column-created sorted descending"' in html, "newest first, sortable by creation"
    newer = JobFactory.create()
    (oldest_first,) = re.findall(r'<th scope="col" class="sortable column-created[^>]*>.*?href="(\?o=\d+)"', html, re.S)
    in_order = re.findall(
        r'name="_selected_action" value="([0-9a-f-]{36})"', page(admin_client, CHANGELIST + oldest_first)
    )
    assert in_order == [str(job.id), str(newer.id)]

    story = page(admin_client, f"/admin/jobs/job/{job.id}/change/")
    for moment in ("2025-12-05 13:01:18", "2025-12-05 14:03:23", "2025-12-05 14:03:27"):
        assert f'<div class="readonly">{moment}</div>' in story, moment
    assert '<div class="readonly">1h 02m 05s</div>' in story


def test_job_list_never_counts_the_whole_table(admin_client):
    for _ in range(3):
        JobFactory.create()
    with CaptureQueriesContext(connection) as queries:
        page(admin_client, CHANGELIST)
        page(admin_client, f"{CHANGELIST}?status__exact=queued&backend=default")
    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]
    assert counts, "the list shows a (capped) count"
    # Every count is over a LIMITed subquery: a million rows are never counted.
    assert all("LIMIT" in sql.upper() for sql in counts), counts
    assert not any("DISTINCT" in q["sql"].upper() and "jobs_job" in q["sql"] for q in queries), "filters scan jobs"


def test_job_list_says_more_than_when_the_count_is_capped(admin_client, monkeypatch):
    monkeypatch.setattr("monitoring.job_admin.COUNT_CAP", 3)
    for _ in range(5):
        JobFactory.create()
    assert "more than 3 jobs" in page(admin_client, CHANGELIST)


def test_job_list_filters_by_status_type_backend_category_and_finish_date(admin_client):
    oom = finished_job(status=JobStatus.FAILED, category=FailureCategory.OUT_OF_MEMORY, backend="gpu4")
    finished_job(status=JobStatus.FAILED, category=FailureCategory.NODE_ERROR, backend="gpu4")
    video = finished_job(job_type="video", backend="gpu1")
    old = finished_job(finished_at=timezone.now() - timedelta(days=5))
    queued = JobFactory.create()
    stats_rollup_refresh()

    assert listed_ids(page(admin_client, f"{CHANGELIST}?failure_category__exact=out_of_memory")) == {str(oom.id)}
    assert listed_ids(page(admin_client, f"{CHANGELIST}?job_type=video")) == {str(video.id)}
    assert str(oom.id) in listed_ids(page(admin_client, f"{CHANGELIST}?backend=gpu4&status__exact=failed"))
    assert listed_ids(page(admin_client, f"{CHANGELIST}?status__exact=queued")) == {str(queued.id)}
    since = (timezone.now() - timedelta(days=1)).isoformat()
    recent = listed_ids(page(admin_client, f"{CHANGELIST}?finished_at__gte={since.replace('+', '%2B')}"))
    assert str(old.id) not in recent and str(video.id) in recent
    # Backends seen in history are offered as filters, without a DISTINCT over the jobs.
    assert "?backend=gpu4" in page(admin_client, CHANGELIST)


def test_search_by_id_prefix_prompt_id_and_username(admin_client):
    artist = UserFactory.create(username="mika")
    mine = JobFactory.create(user=artist)
    other = JobFactory.create()
    retried = JobFactory.create()
    Job.objects.filter(pk=retried.pk).update(prompt_id=uuid.uuid4())
    retried.refresh_from_db()

    assert listed_ids(page(admin_client, f"{CHANGELIST}?q={other.id}")) == {str(other.id)}
    assert listed_ids(page(admin_client, f"{CHANGELIST}?q={str(other.id)[:8]}")) == {str(other.id)}
    assert listed_ids(page(admin_client, f"{CHANGELIST}?q={retried.prompt_id}")) == {str(retried.id)}
    assert listed_ids(page(admin_client, f"{CHANGELIST}?q=mika")) == {str(mine.id)}
    assert listed_ids(page(admin_client, f"{CHANGELIST}?q=mik")) == set()  # exact usernames only: indexed


# --- the job page ----------------------------------------------------------------------------


def test_job_page_tells_the_whole_story(admin_client, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    job = finished_job(status=JobStatus.FAILED, category=FailureCategory.NODE_ERROR, message="KSampler #3: boom")
    Job.objects.filter(pk=job.pk).update(
        error_details={
            "node_type": "KSampler",
            "traceback": ['  File "execution.py", line 323\n', "RuntimeError: boom\n"],
        }
    )
    now = timezone.now()
    for seq, kind, node in ((2, "node_started", "3"), (1, "status", ""), (3, "node_finished", "3")):
        JobEvent.objects.create(job=job, seq=seq, kind=kind, at=now, node_id=node, data={"n": seq})
    NodeTiming.objects.create(
        job=job,
        node_id="3",
        class_type="KSampler",
        backend="gpu1",
        started_at=now - timedelta(seconds=9),
        finished_at=now,
        duration=9.0,
        steps=20,
    )
    JobAttempt.objects.create(
        job=job,
        number=1,
        prompt_id=job.id,
        backend="gpu1",
        outcome="failed",
        failure_category="worker_lost",
        error_message="worker went away",
    )
    JobAttempt.objects.create(
        job=job,
        number=2,
        prompt_id=uuid.uuid4(),
        backend="gpu1",
        outcome="failed",
        failure_category="node_error",
        error_message="KSampler #3: boom",
    )
    image = JobOutput(job=job, node_id="9", kind="images", comfy_filename="a.png", media_type="image/png")
    image.file.save("a.png", ContentFile(b"\x89PNG"), save=True)
    video = JobOutput(job=job, node_id="10", kind="gifs", comfy_filename="b.mp4", media_type="video/mp4")
    video.file.save("b.mp4", ContentFile(b"mp4"), save=True)

    html = page(admin_client, f"/admin/jobs/job/{job.id}/change/")
    kinds = re.findall(r'class="timeline-event" data-kind="([a-z_]+)"', html)
    assert kinds == ["status", "node_started", "node_finished"], "timeline in seq order"
    assert html.count('class="node-timing"') == 1 and "KSampler" in html
    assert 'class="chart hbar-chart"' in html
    assert html.count('class="job-attempt"') == 2 and "worker went away" in html
    assert "line 323" in html and "RuntimeError: boom" in html  # the traceback, line by line
    assert f'src="/api/jobs/{job.id}/outputs/{image.pk}/"' in html
    assert f'class="output-link" href="/api/jobs/{job.id}/outputs/{video.pk}/"' in html
    # The thumbnail's URL serves the image to the admin's session.
    assert admin_client.get(f"/api/jobs/{job.id}/outputs/{image.pk}/").status_code == 200


def test_cancel_from_the_job_page_cancels_a_waiting_job(admin_client):
    job = JobFactory.create()
    html = page(admin_client, f"/admin/jobs/job/{job.id}/change/")
    assert 'id="job-cancel"' in html and 'id="job-retry"' not in html
    response = admin_client.post(f"/admin/jobs/job/{job.id}/cancel/", follow=True)
    assert response.status_code == 200
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert "cancelled" in response.content.decode()


def test_cancel_action_on_the_list(admin_client):
    waiting, done = JobFactory.create(), finished_job()
    response = admin_client.post(
        CHANGELIST, {"action": "cancel_jobs", "_selected_action": [str(waiting.id), str(done.id)]}, follow=True
    )
    assert "cancel requested for 1 job(s)" in response.content.decode().lower()
    waiting.refresh_from_db()
    done.refresh_from_db()
    assert (waiting.status, done.status) == (JobStatus.CANCELLED, JobStatus.COMPLETED)


def test_retry_calls_the_retry_service_and_opens_the_new_job(admin_client, monkeypatch):
    calls = []

    def job_retry(job: Job) -> Job:
        calls.append(job.pk)
        return JobFactory.create(retry_of=job)

    monkeypatch.setattr(services, "job_retry", job_retry)
    failed = finished_job(status=JobStatus.FAILED, category=FailureCategory.LOST)
    completed = finished_job()
    response = admin_client.post(f"/admin/jobs/job/{failed.id}/retry/")
    new_job = Job.objects.get(retry_of=failed)
    assert calls == [failed.pk]
    assert response.status_code == 302 and response["Location"].endswith(f"/admin/jobs/job/{new_job.id}/change/")
    assert str(new_job.id)[:8] in page(admin_client, f"/admin/jobs/job/{failed.id}/change/")  # "retried as"
    # A completed job is not retried.
    admin_client.post(CHANGELIST, {"action": "retry_jobs", "_selected_action": [str(completed.id)]})
    assert calls == [failed.pk]


def test_staff_without_change_permission_cannot_cancel(client):
    viewer = UserFactory.create(is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_job"))
    client.force_login(viewer)
    job = JobFactory.create()
    assert client.post(f"/admin/jobs/job/{job.id}/cancel/").status_code == 403
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED


# --- dashboard pages -------------------------------------------------------------------------


def test_dashboard_pages_need_staff(client):
    client.force_login(UserFactory.create())
    for name in ("statistics", "failures", "live-queue", "backends"):
        response = client.get(f"/admin/dashboard/{name}/")
        assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_statistics_page_draws_its_charts(admin_client):
    finished_job()
    finished_job(job_type="video", run=900, backend="gpu2")
    stats_rollup_refresh()
    html = page(admin_client, "/admin/dashboard/statistics/?days=7")
    assert html.count("<svg") >= 8
    bars = re.findall(r'<svg class="chart bar-chart"[^>]*data-points="(\d+)"', html)
    assert bars and all(int(n) > 0 for n in bars[:3])
    assert 'class="chart line-chart"' in html and 'class="point"' in html
    # Server-side SVG: nothing loaded from elsewhere, no chart script.
    assert not re.search(r'src="(https?:)?//', html) and "chart.js" not in html.lower()


def test_failure_page_counts_and_links_through_to_the_jobs(admin_client):
    oom = [
        finished_job(
            status=JobStatus.FAILED,
            category=FailureCategory.OUT_OF_MEMORY,
            backend="gpu4",
            message="KSampler #3: OutOfMemoryError: CUDA out of memory",
        )
        for _ in range(3)
    ]
    lost = finished_job(
        status=JobStatus.FAILED, category=FailureCategory.LOST, backend="gpu1", message="the prompt vanished"
    )
    finished_job(backend="gpu4")
    stats_rollup_refresh()
    html = page(admin_client, "/admin/dashboard/failures/?days=7")
    assert "Out of memory" in html and "CUDA out of memory" in html

    category_links = links(html, r"failure_category__exact=out_of_memory")
    assert category_links
    for url in category_links:
        assert listed_ids(page(admin_client, url)) == {str(job.id) for job in oom}, url
    message_links = links(html, r"error_message=KSampler")
    assert message_links and listed_ids(page(admin_client, message_links[0])) == {str(job.id) for job in oom}
    backend_links = links(html, r"backend=gpu1&") + links(html, r"backend=gpu1$")
    assert any(listed_ids(page(admin_client, url)) == {str(lost.id)} for url in backend_links)


def test_backends_page_shows_health_and_drains(admin_client, settings):
    settings.COMFYUI_BACKENDS = {"gpu1": "http://gpu1:8188", "gpu2": "http://gpu2:8188"}
    BackendHealthSample.objects.create(
        backend="gpu1", reachable=True, queue_running=1, queue_pending=2, vram_total=24 << 30, vram_free=8 << 30
    )
    BackendHealthSample.objects.create(backend="gpu2", reachable=False, error="connection refused")
    html = page(admin_client, "/admin/dashboard/backends/")
    assert 'data-backend="gpu1"' in html and 'data-backend="gpu2"' in html
    assert "connection refused" in html
    assert 'class="chart state-strip"' in html and 'class="chart sparkline"' in html

    response = admin_client.post("/admin/dashboard/backends/gpu2/drain/", {"draining": "1"}, follow=True)
    assert "gpu2 is draining" in response.content.decode().lower()
    gpu2 = Backend.objects.get(name="gpu2")
    assert gpu2.draining and gpu2.draining_since is not None
    assert 'data-backend="gpu2" data-draining="1"' in response.content.decode()
    admin_client.post("/admin/dashboard/backends/gpu2/drain/", {"draining": "0"})
    assert not Backend.objects.get(name="gpu2").draining
    assert admin_client.post("/admin/dashboard/backends/nope/drain/", {"draining": "1"}).status_code == 404
    assert admin_client.get("/admin/dashboard/backends/gpu2/drain/").status_code == 405


def test_backend_set_draining_keeps_the_first_drain_time():
    from fleet.backends import backend_set_draining

    first = backend_set_draining("gpu3", True)
    again = backend_set_draining("gpu3", True)
    assert again.draining and again.draining_since == first.draining_since
    assert backend_set_draining("gpu3", False).draining_since is None


def test_live_queue_page_starts_from_the_waiting_and_running_jobs(admin_client):
    waiting = JobFactory.create(backend="default")
    running = JobFactory.create(backend="default")
    Job.objects.filter(pk=running.pk).update(status=JobStatus.RUNNING, progress=0.4)
    done = finished_job()
    html = page(admin_client, "/admin/dashboard/live-queue/")
    found = re.search(r'<script id="live-queue-initial" type="application/json">(.*?)</script>', html, re.S)
    assert found, "the live queue page has no initial data"
    initial = found.group(1)
    assert str(waiting.id) in initial and str(running.id) in initial and str(done.id) not in initial
    assert "monitoring/live_queue.js" in html


def test_admin_index_leads_to_the_dashboard(admin_client):
    html = page(admin_client, "/admin/")
    for url in (
        "/admin/dashboard/statistics/",
        "/admin/dashboard/failures/",
        "/admin/dashboard/live-queue/",
        "/admin/dashboard/backends/",
    ):
        assert f'href="{url}"' in html


def test_retry_through_the_real_service_makes_a_linked_job(admin_client):
    failed = finished_job(status=JobStatus.FAILED, category=FailureCategory.LOST, backend="default")
    admin_client.post(f"/admin/jobs/job/{failed.id}/retry/")
    retry = Job.objects.get(retry_of=failed)
    assert retry.status == JobStatus.QUEUED and retry.workflow == failed.workflow
