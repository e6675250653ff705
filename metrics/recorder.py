"""The counters and histograms each process keeps (jobs.instruments calls them through PrometheusRecorder).

With PROMETHEUS_MULTIPROC_DIR set (run_system and Docker set it), prometheus-client keeps each
process's values in a file of that directory, and a scrape of any web process sums every process's
files (metrics.exposition): a counter a GPU worker raised is seen by the web. Without it the values
stay in this process, which is right only for one process (the unit tests, `manage.py runserver`).
Only counters and histograms live here: every gauge is read from the database at scrape time
(metrics.collector), so no gauge needs a multiprocess_mode, and no dead process's gauge lingers.
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram

from jobs.instruments import TransitionedJob
from jobs.models import FINAL_STATUSES, JobStatus
from metrics.labels import backend_label, category_label, job_type_label, state_label

# The process's own metrics; a scrape reads them from here, or from the files of all processes.
PROCESS_REGISTRY = CollectorRegistry(auto_describe=True)

# Image jobs take 30-60 s, videos 8-40 min (DESIGN.md); a wait may be anything up to hours.
RUN_BUCKETS = (1, 5, 10, 20, 30, 45, 60, 90, 120, 300, 600, 900, 1200, 1800, 2400, 3600, 7200)
WAIT_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)

JOB_RUN_SECONDS = Histogram(
    "anime_job_run_seconds",
    "Seconds from a job's start in ComfyUI to its end, observed when it ends",
    ["backend", "job_type", "outcome"],
    buckets=RUN_BUCKETS,
    registry=PROCESS_REGISTRY,
)
JOB_QUEUE_WAIT_SECONDS = Histogram(
    "anime_job_queue_wait_seconds",
    "Seconds a job waited in the queue before it was submitted to ComfyUI, observed at the submission",
    ["backend", "job_type"],
    buckets=WAIT_BUCKETS,
    registry=PROCESS_REGISTRY,
)
JOB_FAILURES = Counter(
    "anime_job_failures",
    "Jobs that ended failed, by failure category (retried attempts are not counted)",
    ["backend", "job_type", "category"],
    registry=PROCESS_REGISTRY,
)
JOB_TRANSITIONS = Counter(
    "anime_job_transitions",
    "Status changes of jobs, by the status entered",
    ["state"],
    registry=PROCESS_REGISTRY,
)
TRACKER_RECONNECTS = Counter(
    "anime_tracker_reconnects",
    "New ComfyUI websockets opened by trackers: the old one dropped, or went silent while the prompt ran",
    ["reason"],
    registry=PROCESS_REGISTRY,
)
PROGRESS_WRITES = Counter(
    "anime_progress_writes",
    "Coalesced progress writes of trackers to the database",
    registry=PROCESS_REGISTRY,
)
BROADCASTS = Counter(
    "anime_broadcasts",
    "Messages sent to the channel layer's groups (job states, queue moves), by outcome",
    ["outcome"],
    registry=PROCESS_REGISTRY,
)

RECONNECT_REASONS = frozenset({"dropped", "silent"})


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def _waited_since(job: TransitionedJob) -> datetime:
    """When the job's current wait began: its creation, or the end of a retry's backoff."""
    if job.not_before is not None and job.not_before > job.created_at:
        return job.not_before
    return job.created_at


class PrometheusRecorder:
    def job_transitioned(self, job: TransitionedJob, old: str, new: str) -> None:
        JOB_TRANSITIONS.labels(state=state_label(new)).inc()
        backend, job_type = backend_label(job.backend), job_type_label(job.job_type)
        if new == JobStatus.SUBMITTED and old == JobStatus.QUEUED:
            waited = _seconds(_waited_since(job), job.submitted_at)
            if waited is not None:
                JOB_QUEUE_WAIT_SECONDS.labels(backend=backend, job_type=job_type).observe(waited)
        if new in FINAL_STATUSES:
            ran = _seconds(job.started_at, job.finished_at)
            if ran is not None:
                JOB_RUN_SECONDS.labels(backend=backend, job_type=job_type, outcome=new).observe(ran)
        if new == JobStatus.FAILED:
            category = category_label(job.failure_category)
            JOB_FAILURES.labels(backend=backend, job_type=job_type, category=category).inc()

    def tracker_reconnected(self, reason: str) -> None:
        TRACKER_RECONNECTS.labels(reason=reason if reason in RECONNECT_REASONS else "other").inc()

    def progress_written(self) -> None:
        PROGRESS_WRITES.inc()

    def broadcast_sent(self, ok: bool) -> None:
        BROADCASTS.labels(outcome="sent" if ok else "failed").inc()
