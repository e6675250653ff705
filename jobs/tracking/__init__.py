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

from fleet.backends import backend_client
from jobs import eta
from jobs.models import Job, JobStatus
from jobs.node_catalog import node_catalog
from jobs.progress import JobProgress  # devtools.benchmarks.job_write_counts counts its messages here
from jobs.tracking.claim import claim_when_free, heartbeat_seconds, must_wait, tracker_client_id
from jobs.tracking.ending import TrackingEnded
from jobs.tracking.tracker import JobTracker

__all__ = ["JobProgress", "JobTracker", "TrackingEnded", "heartbeat_seconds", "job_track", "tracker_client_id"]

logger = logging.getLogger(__name__)


def job_track(job_id: str) -> None:
    """Entry point of the GPU worker's task."""
    job = Job.objects.filter(pk=job_id).first()
    if job is None or job.is_final:
        return
    if job.status == JobStatus.QUEUED and must_wait(job):
        return
    client_id = tracker_client_id(job)
    if job.status != JobStatus.QUEUED and not claim_when_free(job, client_id):
        logger.info("job %s is followed by a live tracker; this delivery stops", job.id)
        return
    client = backend_client(job.backend)
    tracker = JobTracker(job, client, client_id=client_id, catalog=node_catalog(job.backend, client))
    try:
        tracker.run()
    except TrackingEnded:
        pass
    finally:
        tracker.close()
        # This job's node timings are new history: the next job here learns from them.
        eta.eta_cache_clear()
