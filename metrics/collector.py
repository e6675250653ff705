"""What the database knows, read when Prometheus scrapes: jobs by state, the queues, failures, backend health.

A few queries whose cost does not grow with the number of jobs: the live states (blocked, queued,
submitted, running) through the status indexes; finished jobs from the day roll-ups
(monitoring.rollups, refreshed every minute by beat) plus the jobs finished since their last refresh
(the finished_at index); each configured backend's latest health probe. The result is kept for
METRICS_CACHE_SECONDS in each process, so any number of scrapers cost one read per interval.
"""

from __future__ import annotations

import threading
import time
from collections import Counter as Tally
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import Count, Min, Sum
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fleet.backends import draining_backends
from jobs.models import FINAL_STATUSES, Job, JobStatus
from metrics.labels import backend_label, category_label, job_type_label, state_label
from monitoring.models import BackendHealthSample, JobRollup, RollupPeriod, RollupState
from monitoring.rollups import STATE_NAME

LIVE_STATUSES = (JobStatus.BLOCKED, JobStatus.QUEUED, JobStatus.SUBMITTED, JobStatus.RUNNING)


def _live_jobs(now: datetime) -> list[Metric]:
    jobs = Tally[tuple[str, str, str]]()
    depth = Tally[str]({backend_label(name): 0 for name in [*settings.COMFYUI_BACKENDS, ""]})
    oldest: dict[str, datetime] = {}
    rows = (
        Job.objects.filter(status__in=LIVE_STATUSES)
        .values("status", "backend", "job_type")
        .annotate(count=Count("id"), oldest=Min("created_at"))
        .order_by()
    )
    for row in rows:
        backend = backend_label(row["backend"])
        jobs[(state_label(row["status"]), backend, job_type_label(row["job_type"]))] += row["count"]
        if row["status"] == JobStatus.QUEUED:
            depth[backend] += row["count"]
            oldest[backend] = min(oldest.get(backend, row["oldest"]), row["oldest"])
    queue_depth = GaugeMetricFamily(
        "anime_queue_depth", "Jobs waiting in the queue (backend unbound: not routed to a GPU yet)", labels=["backend"]
    )
    oldest_wait = GaugeMetricFamily(
        "anime_queue_oldest_wait_seconds", "Age of the oldest waiting job (0 when none waits)", labels=["backend"]
    )
    for backend, count in sorted(depth.items()):
        queue_depth.add_metric([backend], count)
        since = oldest.get(backend)
        oldest_wait.add_metric([backend], max(0.0, (now - since).total_seconds()) if since else 0.0)
    return [_jobs_family(jobs, "live"), queue_depth, oldest_wait]


def _jobs_family(jobs: Tally[tuple[str, str, str]], which: str) -> GaugeMetricFamily:
    if which == "live":
        name, text = "anime_jobs", "Jobs by state, backend and type (blocked, queued, submitted, running)"
    else:
        name = "anime_finished_jobs"
        text = "Finished jobs by state, backend and type, all time (day roll-ups, then jobs finished since)"
    family = GaugeMetricFamily(name, text, labels=["state", "backend", "job_type"])
    for (state, backend, job_type), count in sorted(jobs.items()):
        family.add_metric([state, backend, job_type], count)
    return family


def _finished_jobs() -> list[Metric]:
    """All-time finished jobs from the roll-ups, plus those finished since the roll-ups were refreshed."""
    refreshed = RollupState.objects.filter(name=STATE_NAME).values_list("refreshed_until", flat=True).first()
    cells = Tally[tuple[str, str, str, str]]()
    if refreshed is None:  # never rolled up: counting a million jobs here is what the roll-ups avoid
        return _finished_families(cells)
    rolled = (
        JobRollup.objects.filter(period=RollupPeriod.DAY)
        .values("status", "backend", "job_type", "failure_category")
        .annotate(count=Sum("count"))
        .order_by()
    )
    since = (
        Job.objects.filter(finished_at__gte=refreshed, status__in=FINAL_STATUSES)
        .values("status", "backend", "job_type", "failure_category")
        .annotate(count=Count("id"))
        .order_by()
    )
    for row in [*rolled, *since]:
        key = (row["status"], row["backend"], row["job_type"], row["failure_category"])
        cells[key] += row["count"] or 0
    return _finished_families(cells)


def _finished_families(cells: Tally[tuple[str, str, str, str]]) -> list[Metric]:
    jobs = Tally[tuple[str, str, str]]()
    failed = Tally[tuple[str, str]]()
    for (status, backend, job_type, category), count in cells.items():
        jobs[(state_label(status), backend_label(backend), job_type_label(job_type))] += count
        if status == JobStatus.FAILED:
            failed[(backend_label(backend), category_label(category))] += count
    failures = GaugeMetricFamily(
        "anime_failed_jobs", "Jobs that ended failed, all time, by failure category", labels=["backend", "category"]
    )
    for (backend, category), count in sorted(failed.items()):
        failures.add_metric([backend, category], count)
    return [_jobs_family(jobs, "finished"), failures]


def _backends(now: datetime) -> list[Metric]:
    up = GaugeMetricFamily("anime_backend_up", "1 if the latest health probe reached ComfyUI", labels=["backend"])
    draining = GaugeMetricFamily("anime_backend_draining", "1 while a backend is drained", labels=["backend"])
    age = GaugeMetricFamily(
        "anime_backend_probe_age_seconds", "Age of the latest health probe of a backend", labels=["backend"]
    )
    queue = GaugeMetricFamily(
        "anime_backend_comfyui_queue", "Prompts in ComfyUI's own queue at the latest probe", labels=["backend"]
    )
    vram_total = GaugeMetricFamily("anime_backend_vram_total_bytes", "VRAM of the first GPU", labels=["backend"])
    vram_free = GaugeMetricFamily("anime_backend_vram_free_bytes", "Free VRAM of the first GPU", labels=["backend"])
    drained = draining_backends()
    fields = ("checked_at", "reachable", "queue_running", "queue_pending", "vram_total", "vram_free")
    for name in settings.COMFYUI_BACKENDS:  # configured backends only: the labels stay bounded
        draining.add_metric([name], 1.0 if name in drained else 0.0)
        sample: dict[str, Any] | None = (
            BackendHealthSample.objects.filter(backend=name).order_by("-checked_at").values(*fields).first()
        )
        if sample is None:
            continue  # never probed: no value rather than a made-up "down"
        up.add_metric([name], 1.0 if sample["reachable"] else 0.0)
        age.add_metric([name], max(0.0, (now - sample["checked_at"]).total_seconds()))
        if sample["reachable"]:
            queue.add_metric([name], sample["queue_running"] + sample["queue_pending"])
            if sample["vram_total"] is not None:
                vram_total.add_metric([name], sample["vram_total"])
            if sample["vram_free"] is not None:
                vram_free.add_metric([name], sample["vram_free"])
    return [up, draining, age, queue, vram_total, vram_free]


def database_metrics() -> list[Metric]:
    started = time.monotonic()
    now = timezone.now()
    metrics = [*_live_jobs(now), *_finished_jobs(), *_backends(now)]
    took = GaugeMetricFamily("anime_metrics_read_seconds", "Seconds the latest read of the database's metrics took")
    took.add_metric([], time.monotonic() - started)
    return [*metrics, took]


class DatabaseCollector(Collector):
    """Reads the database at most once per METRICS_CACHE_SECONDS, whoever scrapes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: list[Metric] = []
        self._read_at: float | None = None

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = time.monotonic()
            if self._read_at is None or now - self._read_at >= settings.METRICS_CACHE_SECONDS:
                self._metrics = database_metrics()
                self._read_at = now
            metrics = self._metrics
        yield from metrics

    def clear(self) -> None:
        with self._lock:
            self._read_at = None


DATABASE_COLLECTOR = DatabaseCollector()
