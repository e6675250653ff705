"""The per-job tracker: submit the prompt once, follow ComfyUI until the job ends.

It runs inside the GPU worker's task, one job at a time. It listens on ComfyUI's websocket with a
client id of its own (ComfyUI sends a prompt's events only to the submitting client id), turns the
messages into the job's state, and coalesces: the database sees at most one write per
TRACKER_DB_INTERVAL and the browsers at most one broadcast per TRACKER_BROADCAST_INTERVAL,
however fast ComfyUI reports. When the socket drops it reconnects and reconciles from /queue and
/history, because ComfyUI does not replay what was sent in between.
"""

from __future__ import annotations

import logging
import socket
import time
from datetime import timedelta

from django.conf import settings

from jobs import services
from jobs.comfyui_client import ComfySocket, ComfyUIClient, ComfyUIError, HistoryEntry, WsMessage, history_outputs
from jobs.failures import Failure, failure_from_execution_error, failure_from_interruption, failure_from_rejection
from jobs.models import FailureCategory, Job, JobStatus
from jobs.node_catalog import node_catalog
from jobs.progress import JobProgress

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
# A tracker that has not beaten for this long is presumed dead and its job may be claimed.
STALE_AFTER = timedelta(seconds=20)
# With no message for this long, ask /queue whether the prompt is still there.
IDLE_RECONCILE_SECONDS = 10.0
HISTORY_WAIT_SECONDS = 10.0


class TrackingEnded(Exception):
    """The job reached a final status; nothing more to follow."""


def tracker_client_id(job: Job) -> str:
    # Stable across deliveries: a tracker that takes over gets the prompt's remaining events.
    return f"tracker-{job.id}"


def job_track(job_id: str) -> None:
    """Entry point of the GPU worker's task."""
    job = Job.objects.filter(pk=job_id).first()
    if job is None or job.is_final:
        return
    client_id = tracker_client_id(job)
    if not _claim_when_free(job, client_id):
        logger.info("job %s is followed by a live tracker; this delivery stops", job.id)
        return
    tracker = JobTracker(job, services.backend_client(job.backend), client_id=client_id)
    try:
        tracker.run()
    except TrackingEnded:
        pass
    finally:
        tracker.close()


def _claim_when_free(job: Job, client_id: str) -> bool:
    """Claim the job, waiting out a previous tracker whose heartbeat may still look fresh."""
    worker = socket.gethostname()
    deadline = time.monotonic() + STALE_AFTER.total_seconds() + HEARTBEAT_SECONDS
    last_beat = job.heartbeat_at
    while True:
        if services.job_claim(job, client_id=client_id, worker=worker, stale_after=STALE_AFTER):
            return True
        if job.is_final:
            return False
        if job.heartbeat_at != last_beat or time.monotonic() > deadline:
            return False  # someone else is beating: a live tracker follows this job
        time.sleep(1.0)


class JobTracker:
    def __init__(self, job: Job, client: ComfyUIClient, *, client_id: str) -> None:
        self.job = job
        self.client = client
        self.client_id = client_id
        self.socket: ComfySocket | None = None
        self.prompt_id = str(job.prompt_id)
        display_names, output_classes = node_catalog(job.backend, client)
        self.progress = JobProgress(
            prompt_id=self.prompt_id,
            workflow=job.workflow,
            display_names=display_names,
            output_classes=output_classes,
        )
        self.dirty = False
        self.last_db_write = 0.0
        self.last_broadcast = 0.0
        self.last_message = time.monotonic()
        self.last_cancel_check = 0.0
        self.interrupt_sent_at: float | None = None
        self.db_dirty = False
        self.messages = 0
        self.db_writes = 0
        self.broadcasts = 0

    # --- lifecycle ---------------------------------------------------------------------------

    def run(self) -> None:
        self.socket = self._connect_until_deadline()
        where = self._locate_until_deadline()
        if where is None:
            # Not in ComfyUI: never submitted, or a previous delivery's prompt was lost with ComfyUI.
            self._submit(resubmission=self.job.status != JobStatus.QUEUED)
        elif self.job.status == JobStatus.QUEUED:
            self._transition(JobStatus.SUBMITTED, expected=JobStatus.QUEUED)
        if where == "history":
            self._finish()
        self._follow()

    def close(self) -> None:
        logger.info(
            "job %s: %d ComfyUI messages, %d database writes, %d broadcasts",
            self.job.id, self.messages, self.db_writes, self.broadcasts,
        )
        if self.socket is not None:
            self.socket.close()
            self.socket = None

    # --- ComfyUI ------------------------------------------------------------------------------

    def _connect_until_deadline(self) -> ComfySocket:
        deadline = time.monotonic() + settings.TRACKER_RECONNECT_SECONDS
        delay = 0.5
        while True:
            try:
                return self.client.connect(self.client_id)
            except ComfyUIError as exc:
                if time.monotonic() + delay > deadline:
                    self._fail(Failure(FailureCategory.COMFYUI_UNREACHABLE, str(exc)))
                logger.warning("job %s: %s; retrying in %.1fs", self.job.id, exc, delay)
                self._beat_if_due()
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _locate(self) -> str | None:
        """Where ComfyUI has our prompt: "running", "pending", "history" or nowhere (None)."""
        position = self.client.queue().position(self.prompt_id)
        if position is not None:
            return position
        return "history" if self.client.history(self.prompt_id) is not None else None

    def _locate_until_deadline(self) -> str | None:
        deadline = time.monotonic() + settings.TRACKER_RECONNECT_SECONDS
        while True:
            try:
                return self._locate()
            except ComfyUIError as exc:
                if not exc.retryable or time.monotonic() > deadline:
                    self._fail(Failure(FailureCategory.COMFYUI_UNREACHABLE, str(exc)))
                logger.warning("job %s: %s; retrying", self.job.id, exc)
                self._beat_if_due()
                time.sleep(1.0)

    def _submit(self, *, resubmission: bool = False) -> None:
        if not resubmission and not self._transition(JobStatus.SUBMITTED, expected=JobStatus.QUEUED):
            raise TrackingEnded  # cancelled meanwhile, or another delivery submitted it
        deadline = time.monotonic() + settings.TRACKER_RECONNECT_SECONDS
        while True:
            try:
                self.client.submit(self.job.workflow, prompt_id=self.prompt_id, client_id=self.client_id)
                break
            except ComfyUIError as exc:
                if not exc.retryable:
                    self._fail(failure_from_rejection(exc.body, str(exc)))
                if time.monotonic() > deadline:
                    self._fail(Failure(FailureCategory.COMFYUI_UNREACHABLE, str(exc)))
                logger.warning("job %s: submit failed: %s; retrying", self.job.id, exc)
            # The answer may have been lost after ComfyUI accepted the prompt: look before resending.
            time.sleep(1.0)
            self._beat_if_due()
            if self._locate_until_deadline() is not None:
                break
        logger.info("job %s submitted to %s as prompt %s", self.job.id, self.client.base_url, self.prompt_id)

    # --- following ---------------------------------------------------------------------------

    def _follow(self) -> None:
        while True:
            try:
                message = self.socket.receive(self._wait_time())
            except ComfyUIError as exc:
                logger.warning("job %s: %s; reconnecting", self.job.id, exc)
                self._reconnect()
                continue
            if isinstance(message, WsMessage):
                self.messages += 1
                self.last_message = time.monotonic()
                self._apply(message)
            self._flush_if_due()
            self._check_cancel_if_due()
            if time.monotonic() - self.last_message > IDLE_RECONCILE_SECONDS:
                self._reconcile()

    def _apply(self, message: WsMessage) -> None:
        if not self.progress.apply(message):
            return
        self.dirty = True
        if self.progress.started and self.job.status == JobStatus.SUBMITTED:
            self._sync_progress_fields()
            self._transition(JobStatus.RUNNING, expected=JobStatus.SUBMITTED)
        if self.progress.ended:
            self._finish()

    def _wait_time(self) -> float:
        if not self.dirty:
            return settings.COMFYUI_WS_TIMEOUT
        due = self.last_broadcast + settings.TRACKER_BROADCAST_INTERVAL - time.monotonic()
        return min(max(due, 0.005), settings.COMFYUI_WS_TIMEOUT)

    def _reconnect(self) -> None:
        self.close()
        self.socket = self._connect_until_deadline()
        self._reconcile()

    def _reconcile(self) -> None:
        """Ask ComfyUI directly: after a dropped socket or a long silence, messages may be gone."""
        self.last_message = time.monotonic()
        try:
            where = self._locate()
        except ComfyUIError as exc:
            logger.warning("job %s: reconcile failed: %s", self.job.id, exc)
            return
        if where == "history":
            self._finish()
        if where is None:
            self._fail(
                Failure(
                    FailureCategory.LOST,
                    "the prompt is neither in ComfyUI's queue nor in its history (ComfyUI restarted?)",
                )
            )

    # --- coalescing --------------------------------------------------------------------------

    def _sync_progress_fields(self) -> None:
        job, progress = self.job, self.progress
        job.current_node_id = progress.current_node or ""
        job.current_node_class = progress.current_class
        job.current_node_name = progress.current_name
        job.step_value = progress.step_value
        job.step_max = progress.step_max
        job.nodes_total = progress.nodes_total
        job.nodes_done = progress.nodes_done
        job.cached_nodes = sorted(progress.cached)
        job.progress = progress.fraction

    def _flush_if_due(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.dirty and (force or now - self.last_broadcast >= settings.TRACKER_BROADCAST_INTERVAL):
            self._sync_progress_fields()
            self.job.seq += 1
            services.job_broadcast_now(self.job)
            self.broadcasts += 1
            self.last_broadcast = now
            self.dirty = False
            self.db_dirty = True
        if self.db_dirty and (force or now - self.last_db_write >= settings.TRACKER_DB_INTERVAL):
            services.job_progress_save(self.job)
            self.db_writes += 1
            self.last_db_write = now
            self.db_dirty = False
        self._beat_if_due()

    def _beat_if_due(self) -> None:
        now = time.monotonic()
        if now - self.last_db_write >= HEARTBEAT_SECONDS:
            services.job_heartbeat(self.job)
            self.db_writes += 1
            self.last_db_write = now

    # --- cancel ------------------------------------------------------------------------------

    def _check_cancel_if_due(self) -> None:
        now = time.monotonic()
        if now - self.last_cancel_check < settings.TRACKER_DB_INTERVAL:
            return
        self.last_cancel_check = now
        if not services.job_cancel_requested(self.job):
            return
        if self.interrupt_sent_at is not None and now - self.interrupt_sent_at < 5.0:
            return
        try:
            where = self.client.queue().position(self.prompt_id)
            if where == "pending":
                # /interrupt only stops a running prompt; a waiting one is deleted from the queue.
                self.client.delete_from_queue([self.prompt_id])
                self._close(JobStatus.CANCELLED)
            elif where == "running":
                self.client.interrupt(self.prompt_id)
                self.interrupt_sent_at = now
        except ComfyUIError as exc:
            logger.warning("job %s: cancel could not reach ComfyUI: %s", self.job.id, exc)

    # --- ending ------------------------------------------------------------------------------

    def _finish(self) -> None:
        entry = self._history_when_ready()
        outcome = self.progress.outcome
        if entry is not None and outcome is None:
            outcome = "success" if entry.status_str == "success" else _history_outcome(entry)
        if outcome == "success":
            self._store_outputs(entry)
            self._close(JobStatus.COMPLETED)
        if outcome == "interrupted":
            if services.job_cancel_requested(self.job):
                self._close(JobStatus.CANCELLED)
            data = self.progress.error or (entry.message("execution_interrupted") if entry else None) or {}
            self._fail(failure_from_interruption(data))
        data = self.progress.error or (entry.message("execution_error") if entry else None) or {}
        self._fail(failure_from_execution_error(data))

    def _history_when_ready(self) -> HistoryEntry | None:
        # ComfyUI writes history just after it sends `executing: null`; give it a moment.
        deadline = time.monotonic() + HISTORY_WAIT_SECONDS
        while True:
            try:
                entry = self.client.history(self.prompt_id)
            except ComfyUIError as exc:
                logger.warning("job %s: history unavailable: %s", self.job.id, exc)
                entry = None
            if entry is not None or time.monotonic() > deadline:
                return entry
            time.sleep(0.2)

    def _store_outputs(self, entry: HistoryEntry | None) -> None:
        if entry is None:
            self._fail(Failure(FailureCategory.OUTPUT_MISSING, "ComfyUI kept no history for the finished prompt"))
        for output in history_outputs(entry):
            try:
                services.job_output_store(self.job, self.client, output)
            except ComfyUIError as exc:
                self._fail(
                    Failure(
                        FailureCategory.OUTPUT_MISSING,
                        f"output {output.filename} of node {output.node_id} could not be fetched: {exc}",
                        {"node_id": output.node_id, "filename": output.filename},
                    )
                )

    def _transition(self, status: str, *, expected: str) -> bool:
        self._sync_progress_fields()
        moved = services.job_transition(self.job, status, expected=expected, **services.progress_values(self.job))
        if moved:
            self.db_writes += 1
            self.broadcasts += 1
            self.db_dirty = False
            self.last_broadcast = time.monotonic()
            self.dirty = False
        elif self.job.is_final:
            raise TrackingEnded
        return moved

    def _close(self, status: str) -> None:
        self._flush_if_due(force=True)
        if not self.job.is_final:
            self._transition(status, expected=self.job.status)
        raise TrackingEnded

    def _fail(self, failure: Failure) -> None:
        self._flush_if_due(force=True)
        if not self.job.is_final:
            services.job_fail(self.job, failure.category, failure.message, failure.details)
        logger.info("job %s failed: %s: %s", self.job.id, failure.category, failure.message)
        raise TrackingEnded


def _history_outcome(entry: HistoryEntry) -> str:
    if entry.message("execution_interrupted") is not None:
        return "interrupted"
    return "error"
