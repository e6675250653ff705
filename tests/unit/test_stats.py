"""Generation statistics: roll-ups kept current incrementally, percentiles, the JSON API, the SVG charts."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone
from rest_framework.test import APIClient

from jobs.models import FailureCategory, Job, JobStatus, NodeTiming
from monitoring.charts import Series, bar_chart, hbar_chart, line_chart
from monitoring.models import JobRollup, RollupPeriod
from monitoring.rollups import DURATION_EDGES, LATE_COMMIT_SLACK, stats_rollup_refresh
from monitoring.stats import generation_stats, histogram_percentile
from tests.factories import JobFactory

pytestmark = pytest.mark.django_db

# A window for jobs stamped minutes ago: "today" alone (days=1) starts at midnight, so at 00:03 a job
# finished 5 minutes before is yesterday's and a test of something else fails.
RECENT_DAYS = 7


def finished_job(
    *,
    status: str = JobStatus.COMPLETED,
    job_type: str = "image",
    backend: str = "gpu1",
    wait: float = 5.0,
    run: float | None = 40.0,
    finished_at: datetime | None = None,
    category: str = "",
    message: str = "",
) -> Job:
    """A job as history leaves it; timestamps are set afterwards because created_at is auto_now_add."""
    finished_at = finished_at or timezone.now() - timedelta(minutes=1)
    started = finished_at - timedelta(seconds=run) if run is not None else None
    submitted = (started or finished_at) - timedelta(seconds=0.1)
    job = JobFactory.create(job_type=job_type, backend=backend)
    Job.objects.filter(pk=job.pk).update(
        status=status,
        created_at=submitted - timedelta(seconds=wait),
        submitted_at=submitted,
        started_at=started,
        finished_at=finished_at,
        failure_category=category,
        error_message=message,
        progress=1.0 if status == JobStatus.COMPLETED else 0.4,
    )
    job.refresh_from_db()
    return job


def group(stats: dict, key: str, name: str) -> dict:
    return next(item for item in stats[f"by_{key}"] if item[key] == name)


def test_histogram_percentile_interpolates_inside_the_bucket():
    histogram = [0] * (len(DURATION_EDGES) + 1)
    thirty = DURATION_EDGES.index(30)  # the bucket [25, 30)
    histogram[thirty] = 10
    assert histogram_percentile(histogram, 0.5) == pytest.approx(27.5)
    assert histogram_percentile(histogram, 1.0) == pytest.approx(30.0)
    assert histogram_percentile([0] * len(histogram), 0.5) is None


def test_statistics_per_job_type_and_backend_from_the_rollup():
    for index in range(10):  # run times 30, 33, ... 57 s: the median is 43.5 s
        finished_job(run=30 + 3 * index, wait=4 + index, backend="gpu1" if index < 6 else "gpu2")
    finished_job(status=JobStatus.FAILED, category=FailureCategory.OUT_OF_MEMORY, run=12, backend="gpu2")
    finished_job(status=JobStatus.FAILED, category=FailureCategory.VALIDATION, run=None, backend="gpu2")
    finished_job(status=JobStatus.CANCELLED, run=3)
    finished_job(job_type="video", run=20 * 60, wait=90)
    stats_rollup_refresh()

    stats = generation_stats(days=7)
    image = group(stats, "job_type", "image")
    assert (image["count"], image["completed"], image["failed"], image["cancelled"]) == (13, 10, 2, 1)
    assert image["success_rate"] == pytest.approx(10 / 12, abs=1e-3)
    # Histogram estimates: within the bucket around the true value.
    assert 40 <= image["run_p50"] <= 47
    assert 50 <= image["run_p95"] <= 60
    assert 7 <= image["wait_p50"] <= 10.5
    video = group(stats, "job_type", "video")
    assert video["count"] == 1 and 18 * 60 <= video["run_p50"] <= 21 * 60
    gpu2 = group(stats, "backend", "gpu2")
    assert (gpu2["completed"], gpu2["failed"]) == (4, 2)
    assert stats["overall"]["count"] == 14
    assert sum(day["count"] for day in stats["throughput_daily"]) == 14
    assert sum(hour["count"] for hour in stats["throughput_hourly"]) == 14


def test_incremental_refresh_adds_new_jobs_once_and_catches_late_commits():
    finished_job()
    first = stats_rollup_refresh()
    assert generation_stats(days=RECENT_DAYS)["overall"]["count"] == 1

    finished_job()
    # Stamped before the previous refresh ran, committed after it: inside the late-commit slack.
    finished_job(finished_at=first.until - LATE_COMMIT_SLACK / 2)
    stats_rollup_refresh()
    stats_rollup_refresh()  # a second run over the same hours changes nothing
    assert generation_stats(days=RECENT_DAYS)["overall"]["count"] == 3
    hourly = JobRollup.objects.filter(period=RollupPeriod.HOUR).values_list("count", flat=True)
    assert sum(hourly) == 3


def test_refresh_leaves_older_hours_alone_and_rebuild_recomputes_them():
    old = finished_job(finished_at=timezone.now() - timedelta(days=3))
    stats_rollup_refresh()
    # A change to history far behind the watermark is not rescanned by the incremental refresh...
    Job.objects.filter(pk=old.pk).update(status=JobStatus.FAILED, failure_category=FailureCategory.LOST)
    stats_rollup_refresh()
    assert group(generation_stats(days=7), "job_type", "image")["completed"] == 1
    # ...and a rebuild (what generate_history runs) recomputes everything.
    stats_rollup_refresh(rebuild=True)
    assert group(generation_stats(days=7), "job_type", "image")["failed"] == 1


def test_jobs_outside_the_window_are_not_counted():
    finished_job(finished_at=timezone.now() - timedelta(days=10))
    finished_job()
    stats_rollup_refresh()
    assert generation_stats(days=7)["overall"]["count"] == 1
    assert generation_stats(days=30)["overall"]["count"] == 2


def test_slowest_node_classes_come_first():
    job = finished_job()
    now = timezone.now()
    for class_type, seconds in (("KSampler", 30.0), ("KSampler", 34.0), ("VAEDecode", 2.0), ("SaveImage", 0.2)):
        NodeTiming.objects.create(
            job=job,
            node_id="1",
            class_type=class_type,
            backend="gpu1",
            started_at=now - timedelta(seconds=seconds),
            finished_at=now - timedelta(seconds=1),
            duration=seconds,
        )
    stats_rollup_refresh()
    nodes = generation_stats(days=RECENT_DAYS)["slowest_nodes"]
    assert [node["class_type"] for node in nodes] == ["KSampler", "VAEDecode", "SaveImage"]
    assert nodes[0]["count"] == 2 and nodes[0]["mean"] == pytest.approx(32.0)
    assert nodes[0]["max"] == pytest.approx(34.0)


def test_stats_api_is_for_staff_who_may_view_jobs_and_answers_json(api, django_user_model):
    finished_job()
    stats_rollup_refresh()
    assert APIClient().get("/api/stats/").status_code in (401, 403)
    # Fleet-wide figures: an artist (not staff) and staff without the permission are refused.
    assert api.get("/api/stats/").status_code == 403
    staff = django_user_model.objects.create_user("lead-without-perm", password="pw", is_staff=True)
    client = APIClient()
    client.force_authenticate(staff)
    assert client.get("/api/stats/").status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_job"))
    api = APIClient()
    api.force_authenticate(django_user_model.objects.get(pk=staff.pk))
    response = api.get("/api/stats/?days=7")
    assert response.status_code == 200
    body = response.json()
    assert body["window_days"] == 7
    assert group(body, "job_type", "image")["count"] == 1
    assert {"throughput_hourly", "throughput_daily", "slowest_nodes", "by_backend"} <= set(body)
    assert api.get("/api/stats/").json()["window_days"] == 30
    # A window that is not one of the choices is refused with the reason, as the schema says.
    refused = api.get("/api/stats/?days=banana")
    assert refused.status_code == 400 and "days" in refused.json()
    assert api.get("/api/stats/?days=5").status_code == 400


def test_the_beat_schedule_refreshes_the_rollups(settings):
    from monitoring.tasks import stats_rollup_refresh_task

    entry = next(e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"].endswith("stats_rollup_refresh_task"))
    assert entry["schedule"] <= 300
    finished_job()
    stats_rollup_refresh_task()
    assert generation_stats(days=RECENT_DAYS)["overall"]["count"] == 1


def test_bar_chart_draws_one_bar_per_value_and_escapes_labels():
    svg = bar_chart(["<script>", "b"], [Series("x", [3, 5]), Series("y", [1, None])], title="T & U")
    assert svg.count('class="bar"') == 3
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert "T &amp; U" in svg


def test_line_chart_and_hbar_chart_draw_their_points():
    assert line_chart(["a", "b", "c"], [Series("n", [1, 2, 3])], title="t").count('class="point"') == 3
    assert hbar_chart(["KSampler", "VAEDecode"], [30.0, 2.0], title="t").count('class="bar"') == 2
    # An empty chart still renders (a quiet day), with no bars and no division by zero.
    assert 'class="bar"' not in bar_chart([], [Series("x", [])], title="empty")
