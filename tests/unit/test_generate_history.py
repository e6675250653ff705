"""`generate_history` makes history that looks like a studio's: the mix, the durations, the failures."""

from __future__ import annotations

import io
from collections import Counter
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db.models import Count, Sum
from django.utils import timezone

from jobs.models import FINAL_STATUSES, Job, JobAttempt, JobStatus, NodeTiming
from monitoring.stats import generation_stats, window_start

pytestmark = pytest.mark.django_db

JOBS = 3000


@pytest.fixture(scope="module")
def history(django_db_setup, django_db_blocker):
    """Generated once for the module's tests, which only read it (3,000 jobs take seconds)."""
    with django_db_blocker.unblock():
        call_command("generate_history", jobs=JOBS, days=30, users=6, batch=1000, seed=11, stdout=io.StringIO())
    yield Job.objects.all()
    with django_db_blocker.unblock():
        call_command("flush", interactive=False, verbosity=0)


def share(counter: Counter, key: str) -> float:
    return counter[key] / sum(counter.values())


def test_the_mix_of_types_backends_and_outcomes(history):
    assert history.count() == JOBS
    types = Counter(history.values_list("job_type", flat=True))
    assert abs(share(types, "image") - 0.70) < 0.04
    assert abs(share(types, "video") - 0.20) < 0.04
    assert abs(share(types, "upscale") - 0.10) < 0.03
    assert set(history.values_list("backend", flat=True)) == {"gpu1", "gpu2", "gpu3", "gpu4"}
    statuses = Counter(history.values_list("status", flat=True))
    assert set(statuses) <= FINAL_STATUSES
    assert 0.85 < share(statuses, JobStatus.COMPLETED) < 0.92
    assert 0.05 < share(statuses, JobStatus.FAILED) < 0.11
    assert 0.015 < share(statuses, JobStatus.CANCELLED) < 0.06
    categories = Counter(history.filter(status=JobStatus.FAILED).values_list("failure_category", flat=True))
    assert len(categories) >= 8 and "" not in categories
    oom = history.filter(failure_category="out_of_memory").first()
    assert "CUDA out of memory" in oom.error_message and oom.error_details["traceback"]
    assert history.values("user").distinct().count() == 6


def test_times_spread_over_the_period_and_durations_are_realistic(history):
    now = timezone.now()
    assert not history.filter(finished_at__gt=now).exists()
    assert not history.filter(created_at__lt=now - timedelta(days=31)).exists()
    days = {created.date() for created in history.values_list("created_at", flat=True)}
    assert len(days) >= 28, "jobs are spread over the days, not all stamped today"
    for job in history.filter(status=JobStatus.COMPLETED, job_type="image")[:200]:
        assert 30 <= job.run_seconds <= 150 and job.wait_seconds >= 0
    for job in history.filter(status=JobStatus.COMPLETED, job_type="video")[:100]:
        assert 8 * 60 <= job.run_seconds <= 40 * 60


def test_node_timings_add_up_to_the_run_and_attempts_match(history):
    job = history.filter(status=JobStatus.COMPLETED, job_type="image").first()
    timings = list(job.node_timings.order_by("started_at"))
    assert "KSampler" in [t.class_type for t in timings]
    assert sum(t.duration for t in timings) == pytest.approx(job.run_seconds, abs=0.01)
    assert timings[0].started_at == job.started_at
    assert abs(timings[-1].finished_at - job.finished_at) < timedelta(milliseconds=1)  # float seconds, rounded
    classes = set(NodeTiming.objects.values_list("class_type", flat=True))
    assert {
        "CheckpointLoaderSimple",
        "CLIPTextEncode",
        "KSampler",
        "VAEDecode",
        "SaveImage",
        "VHS_VideoCombine",
    } <= classes
    # Every job that reached ComfyUI has an attempt per prompt; a second attempt has its own prompt.
    assert JobAttempt.objects.values("job").distinct().count() == history.filter(submitted_at__isnull=False).count()
    for retried in history.filter(attempt=2)[:10]:
        first, second = retried.attempts.order_by("number")
        assert first.failure_category == "worker_lost" and second.prompt_id == retried.prompt_id != first.prompt_id


def test_the_rollups_are_built_and_match_the_jobs(history):
    since = window_start(30, timezone.now())
    stats = generation_stats(days=30)
    expected = history.filter(finished_at__gte=since)
    assert stats["overall"]["count"] == expected.count()
    per_type = dict(expected.values_list("job_type").annotate(n=Count("pk")))
    assert {item["job_type"]: item["count"] for item in stats["by_job_type"]} == per_type
    assert stats["slowest_nodes"][0]["class_type"] == "KSampler"
    assert sum(day["count"] for day in stats["throughput_daily"]) == expected.count()
    assert NodeTiming.objects.aggregate(n=Sum("duration"))["n"] > 0
