"""The per-job tracker: submit the prompt once, follow ComfyUI until the job ends.

It runs inside the GPU worker's task, one job at a time. It listens on ComfyUI's websocket with a
client id of its own (ComfyUI sends a prompt's events only to the submitting client id), turns the
messages into the job's state and timeline, and coalesces: the database sees at most one write per
TRACKER_DB_INTERVAL and the browsers at most one broadcast per TRACKER_BROADCAST_INTERVAL,
however fast ComfyUI reports. When the socket drops it reconnects and reconciles from /queue and
/history, because ComfyUI does not replay what was sent in between.

The parts: `claim` (wait, claim, client id, heartbeat interval), `session` (ComfyUI: connect,
locate, submit, receive, reconnect, reconcile), `timeline` (events, node timings, previews),
`coalescer` (bounded writes, broadcasts, heartbeats), `watchdog` (cancel, stuck, timed out),
`ending` (history, outputs, the final status), and `tracker`, which puts them together.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import connection

from comfyui import ComfyUIClient
from fleet.backends import backend_client
from jobs import eta
from jobs.models import ACTIVE_STATUSES, Job, JobStatus
from jobs.node_catalog import node_catalog
from jobs.progress import JobProgress  # devtools.benchmarks.job_write_counts counts its messages here
from jobs.tracking.claim import claim_when_free, heartbeat_seconds, must_wait, tracker_client_id
from jobs.tracking.database_outage import DATABASE_DOWN
from jobs.tracking.ending import TrackingEnded
from jobs.tracking.shift import Shift
from jobs.tracking.stopped import tracking_stopped
from jobs.tracking.tracker import JobTracker
from jobs.wake import wake_listen, wake_unlisten, wake_wait

__all__ = [
    "JobProgress",
    "JobTracker",
    "TrackingEnded",
    "backend_work",
    "heartbeat_seconds",
    "job_track",
    "tracker_client_id",
]

logger = logging.getLogger(__name__)

LINGER_LOOK_SECONDS = 0.05
# The listening mark outlives the wait it announces by this much: a look at the queue comes after the wait.
LISTEN_MARK_MARGIN_SECONDS = 1.0


def backend_work(backend: str) -> int:
    """Entry point of the GPU worker's wake task: take the best waiting job this backend can run,
    follow it to its end, take the next, until nothing waits that it can run (jobs.tracking.shift:
    the next prompt goes in as soon as ComfyUI is done with the last, before its outputs are
    stored). Returns the jobs it ran.

    A wake delivered again because the worker's pool child died mid-job finds nothing to take (that
    job keeps the backend busy), then re-attaches to that job (job_track waits out the dead tracker's
    heartbeat) and goes on taking. Looked for after the shift, not before: a query less between a
    new job's wake and its prompt.

    Then it stays GPU_WORKER_LINGER_SECONDS for the next wake (jobs.wake.wake_wait), which reaches it
    in a Redis round trip: the broker's would wait for this task to end and for Celery to hand the
    message to the pool (4-13 ms more between a new job and its prompt, devtools/benchmarks/dispatch.py).
    Meanwhile it says it listens (jobs.wake.wake_listen), and a wake sends no broker message: one
    would start a task after this one, only to find the backend busy or nothing waiting (and its
    publish and delivery cost CPU beside the POST and the take, on a GPU host's few cores)."""
    ran = Shift(backend).run(woken=True)
    if _orphan_resume(backend):
        ran += 1 + Shift(backend).run()
    return ran + _linger(backend)


def _linger(backend: str) -> int:
    """Wait for the next wake after the last job, GPU_WORKER_LINGER_SECONDS. The queue is also looked
    at (one query) after LINGER_LOOK_SECONDS, then twice as long each time: a job made while the last
    one was ending found the backend busy and sent no wake, and the broker's wake of the last job,
    which would have taken it, waits for this task to end. While it waits, its wakes send no broker
    message (jobs.wake.wake_listen); after it, it looks once more, for a wake that saw it listening."""
    if settings.GPU_WORKER_LINGER_SECONDS <= 0:
        return 0
    ran = 0
    while True:
        ran += _listen(backend)
        taken = _look(backend, woken=False)
        if not taken:
            return ran
        ran += taken


def _listen(backend: str) -> int:
    ran, started, look = 0, time.monotonic(), LINGER_LOOK_SECONDS
    try:
        while (left := started + settings.GPU_WORKER_LINGER_SECONDS - time.monotonic()) > 0:
            wait = min(look, left)
            wake_listen(backend, wait + LISTEN_MARK_MARGIN_SECONDS)
            woken = wake_wait(backend, wait)
            taken = _look(backend, woken=woken)
            if taken:
                ran, started, look = ran + taken, time.monotonic(), LINGER_LOOK_SECONDS
            else:
                look *= 2
    finally:
        wake_unlisten(backend)
    return ran


def _look(backend: str, *, woken: bool) -> int:
    """A look at the queue while lingering (the jobs it took). The database may have restarted while
    this worker waited, and its connection with it: the look is then made again on a new connection.
    Otherwise the task ended on the dead one, and a wake it had heard (or that saw it listening, and so
    sent no broker message) was lost until the sweep: a job made right after a PostgreSQL restart
    waited (tests/integration/test_database_faults.py failed so, 2026-12-08)."""
    try:
        return Shift(backend).run(woken=woken)
    except DATABASE_DOWN as exc:
        logger.info("backend %s: the database connection was gone while lingering (%s); looking again", backend, exc)
        connection.close()
    return Shift(backend).run(woken=woken)


def _orphan_resume(backend: str) -> int:
    orphan = Job.objects.filter(backend=backend, status__in=ACTIVE_STATUSES).order_by("heartbeat_at").first()
    if orphan is None:
        return 0
    job_track(str(orphan.pk))  # a live tracker elsewhere keeps it: this one stops within a heartbeat
    return 1


def job_track(job_id: str) -> None:
    """Entry point of the GPU worker's task for one job by id: an active job whose tracker is gone
    (re-attached by the sweep), or a waiting job delivered by id (a message sent before routing was
    late, or a test), which runs on its requested or the default backend.

    Whatever goes wrong in here ends the job: an unexpected exception fails it `internal_error`
    (logged with its traceback) instead of leaving it active for a sweep to hand to the next
    tracker, which would break on it again (a NUL byte from ComfyUI did that, forever).
    """
    job = Job.objects.filter(pk=job_id).first()
    if job is None or job.is_final or job.status == JobStatus.BLOCKED:
        return  # a blocked job is sent to a GPU queue when its upstream jobs release it
    client: ComfyUIClient | None = None
    tracker: JobTracker | None = None
    owned = False  # only a job this delivery won (or a waiting one) is ours to fail
    if job.status == JobStatus.QUEUED and not job.backend:
        job.backend = job.requested_backend or settings.COMFYUI_DEFAULT_BACKEND
    try:
        client = backend_client(job.backend)
        if job.status == JobStatus.QUEUED and must_wait(job):
            return
        client_id = tracker_client_id(job)
        if job.status != JobStatus.QUEUED:
            if not claim_when_free(job, client_id):
                logger.info("job %s is followed by a live tracker; this delivery stops", job.id)
                return
            owned = True
        tracker = JobTracker(job, client, client_id=client_id, catalog=node_catalog(job.backend, client))
        tracker.run()
    except Exception as exc:
        tracking_stopped(
            job, exc, client, ours=lambda: owned or (tracker is not None and tracker.owns_job) or _still_waiting(job)
        )
    finally:
        if tracker is not None:
            tracker.close()
        # This job's node timings are new history: the next job here learns from them (without
        # reading the history again: that took seconds at a million jobs, before every job).
        eta.history_learn(job)


def _still_waiting(job: Job) -> bool:
    # Nobody owns a waiting job: failing it is a compare-and-set from queued like any other.
    return Job.objects.filter(pk=job.pk, status=JobStatus.QUEUED).exists()
