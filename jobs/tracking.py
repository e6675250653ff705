"""The per-job tracker: submit the prompt once, follow ComfyUI until the job ends.

It runs inside the GPU worker's task, one job at a time. It listens on ComfyUI's websocket with a
client id of its own (ComfyUI sends a prompt's events only to the submitting client id), turns the
messages into the job's state and timeline, and coalesces: the database sees at most one write per
TRACKER_DB_INTERVAL and the browsers at most one broadcast per TRACKER_BROADCAST_INTERVAL,
however fast ComfyUI reports. When the socket drops it reconnects and reconciles from /queue and
/history, because ComfyUI does not replay what was sent in between.
"""

from __future__ import annotations

import logging
import socket
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from comfyui import (
    ComfySocket,
    ComfyUIClient,
    ComfyUIError,
    HistoryEntry,
    PreviewFrame,
    WsMessage,
    history_outputs,
)
from fleet.backends import backend_client, backend_is_draining
from jobs import eta, services
from jobs.failures import Failure, failure_from_execution_error, failure_from_interruption, failure_from_rejection
from jobs.models import EventKind, FailureCategory, Job, JobEvent, JobStatus, NodeTiming
from jobs.node_catalog import NodeCatalog, node_catalog
from jobs.progress import JobProgress

logger = logging.getLogger(__name__)

# With no message for this long, ask /queue whether the prompt is still there (sooner just after
# a reconnect, when ComfyUI may have unregistered our new socket: see JobTracker._reconcile).
IDLE_RECONCILE_SECONDS = 10.0
IDLE_AFTER_RECONNECT_SECONDS = 2.0
HISTORY_WAIT_SECONDS = 10.0
DRAINING_RECHECK_SECONDS = 30.0
# ComfyUI reports steps up to ~100 times a second: a broadcast due waits this much longer at most
# for the message that changes the state (see _follow).
BROADCAST_QUIET_SECONDS = 0.05
# How long an interrupted prompt may take to stop before the tracker gives up on it.
STOP_GRACE_SECONDS = 30.0


class TrackingEnded(Exception):
    """The job reached a final status (or went back to the queue); nothing more to follow."""


def heartbeat_seconds() -> float:
    # Several beats fit in the stale window, so a quiet but live tracker never looks dead.
    return min(5.0, settings.TRACKER_STALE_SECONDS / 4)


def tracker_client_id(job: Job) -> str:
    # Stable across deliveries: a tracker that takes over gets the prompt's remaining events.
    return f"tracker-{job.id}"


def job_track(job_id: str) -> None:
    """Entry point of the GPU worker's task."""
    job = Job.objects.filter(pk=job_id).first()
    if job is None or job.is_final:
        return
    if job.status == JobStatus.QUEUED and _must_wait(job):
        return
    client_id = tracker_client_id(job)
    if job.status != JobStatus.QUEUED and not _claim_when_free(job, client_id):
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


def _must_wait(job: Job) -> bool:
    """A retry before its backoff, or a job for a draining backend: put it back for later."""
    delay = 0.0
    if job.not_before and job.not_before > timezone.now():
        delay = (job.not_before - timezone.now()).total_seconds()
    elif backend_is_draining(job.backend):
        delay = DRAINING_RECHECK_SECONDS
    if delay:
        services.job_enqueue(job, countdown=delay)
    return bool(delay)


def _claim_when_free(job: Job, client_id: str) -> bool:
    """Claim the job, waiting out a previous tracker whose heartbeat may still look fresh."""
    worker = socket.gethostname()
    stale_after = timedelta(seconds=settings.TRACKER_STALE_SECONDS)
    deadline = time.monotonic() + settings.TRACKER_STALE_SECONDS + heartbeat_seconds()
    last_beat = job.heartbeat_at
    while True:
        if services.job_claim(job, client_id=client_id, worker=worker, stale_after=stale_after):
            return True
        if job.status not in (JobStatus.SUBMITTED, JobStatus.RUNNING):
            return False
        if job.heartbeat_at != last_beat or time.monotonic() > deadline:
            return False  # someone else is beating: a live tracker follows this job
        time.sleep(1.0)


class JobTracker:
    def __init__(self, job: Job, client: ComfyUIClient, *, client_id: str, catalog: NodeCatalog) -> None:
        self.job = job
        self.client = client
        self.client_id = client_id
        self.socket: ComfySocket | None = None
        self.prompt_id = str(job.prompt_id)
        self.progress = JobProgress(
            prompt_id=self.prompt_id,
            workflow=job.workflow,
            display_names=catalog.display_names,
            output_classes=catalog.output_classes,
            categories=catalog.categories,
        )
        self.estimates = eta.node_estimates(job.backend, job.workflow, self.progress.to_run)
        # Nodes nothing is known about weigh as much as the average known node (JobProgress.weight).
        learned = eta.node_weights(self.estimates)
        self.progress.weights = {n: w for n, w in learned.items() if not self.estimates[n].is_default}
        if job.status != JobStatus.QUEUED:
            self._restore_progress()
        self.started_monotonic = time.monotonic()
        self.dirty = False
        self.db_dirty = False
        self.pending_events: list[JobEvent] = []
        self.unsent_events: list[JobEvent] = []
        self.pending_timings: list[NodeTiming] = []
        self.node_started_at: dict[str, datetime] = {}
        self.last_db_write = 0.0
        self.last_broadcast = 0.0
        self.last_message = time.monotonic()
        self.reconnected_at: float | None = None
        self.message_gap = 1.0  # smoothed seconds between ComfyUI messages
        self.last_progress = time.monotonic()
        self.last_db_check = 0.0
        self.last_step_sample = 0.0
        self.last_preview = 0.0
        self.interrupt_sent_at: float | None = None
        self.interrupt_resent_at = 0.0
        self.interrupt_reason: Failure | None = None
        self.messages = 0
        self.db_writes = 0
        self.broadcasts = 0

    def _restore_progress(self) -> None:
        """Taking over from a tracker that died: carry on from what it stored, so progress does
        not start again from zero (ComfyUI will not repeat what it already sent)."""
        progress, job = self.progress, self.job
        progress.started = job.status == JobStatus.RUNNING
        progress.cached = set(job.cached_nodes)
        finished = job.events.filter(kind=EventKind.NODE_FINISHED)
        if job.submitted_at:
            finished = finished.filter(at__gte=job.submitted_at)
        progress.done = set(finished.values_list("node_id", flat=True))
        progress.current_node = job.current_node_id or None
        progress.fraction = job.progress

    # --- lifecycle ---------------------------------------------------------------------------

    def run(self) -> None:
        fresh = self.job.status == JobStatus.QUEUED
        # Win the job before touching ComfyUI: a duplicate delivery that loses here never opens a
        # socket with our client id (ComfyUI would route the prompt's events to it instead).
        if fresh and not self._transition(
            JobStatus.SUBMITTED,
            expected=JobStatus.QUEUED,
            client_id=self.client_id,
            worker=socket.gethostname(),
            heartbeat_at=timezone.now(),
            deliveries=self.job.deliveries + 1,
        ):
            raise TrackingEnded
        self.socket = self._connect_until_deadline()
        where = self._locate_until_deadline()
        if where is None:
            if not fresh:
                # A previous tracker submitted it; ComfyUI no longer has it.
                from jobs.sweeps import lost_failure

                self._fail(Failure(*lost_failure(self.job)))
            self._submit()
        services.job_attempt_open(self.job, worker=socket.gethostname())
        if where == "history":
            self._finish()
        self._follow()

    def close(self) -> None:
        logger.info(
            "job %s: %d ComfyUI messages, %d database writes, %d broadcasts",
            self.job.id,
            self.messages,
            self.db_writes,
            self.broadcasts,
        )
        self._close_socket()

    def _close_socket(self) -> None:
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

    def _submit(self) -> None:
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
            if message is not None:
                now = time.monotonic()
                self.messages += 1
                self.message_gap = 0.8 * self.message_gap + 0.2 * min(now - self.last_message, IDLE_RECONCILE_SECONDS)
                self.last_message = now
            # Broadcast on a message that changed what browsers see, or once ComfyUI went quiet:
            # not on the `progress_state` that precedes each step's `progress`, which would show
            # the step before.
            fresh = message is None
            if isinstance(message, WsMessage):
                fresh = self._apply(message)
            elif isinstance(message, PreviewFrame):
                self._keep_preview(message)
            self._flush_if_due(hold_broadcast=not fresh)
            self._check_db_if_due()
            self._check_stuck()
            if time.monotonic() - self.last_message > self._idle_limit():
                self._reconcile(silent=True)

    def _apply(self, message: WsMessage) -> bool:
        """Feed one message; True when what browsers see changed."""
        if not self.progress.apply(message):
            return False
        self.dirty = True
        self.last_progress = time.monotonic()
        self.job.last_progress_at = timezone.now()
        self._record_happenings()
        self._sample_steps(message)
        if self.progress.started and self.job.status == JobStatus.SUBMITTED:
            self._transition(JobStatus.RUNNING, expected=JobStatus.SUBMITTED)
        if self.progress.ended:
            self._finish()
        return True

    def _wait_time(self) -> float:
        if not self.dirty and not self.unsent_events:
            return settings.COMFYUI_WS_TIMEOUT
        # Past the interval, the next state-changing message is broadcast at once; the timeout only
        # sends the last state when ComfyUI went quiet for BROADCAST_QUIET_SECONDS more.
        due = self.last_broadcast + settings.TRACKER_BROADCAST_INTERVAL + BROADCAST_QUIET_SECONDS - time.monotonic()
        return min(max(due, 0.005), settings.COMFYUI_WS_TIMEOUT)

    def _idle_limit(self) -> float:
        """How long a silence is normal: a sampler reporting every 10 ms going quiet for 2 s is
        suspect; one whose steps take a minute is not."""
        heard_since_reconnect = self.reconnected_at is not None and self.last_message > self.reconnected_at + 0.5
        if self.reconnected_at is not None and not heard_since_reconnect:
            return IDLE_AFTER_RECONNECT_SECONDS
        return min(IDLE_RECONCILE_SECONDS, max(IDLE_AFTER_RECONNECT_SECONDS, 20 * self.message_gap))

    def _reconnect(self) -> None:
        self._close_socket()
        self.socket = self._connect_until_deadline()
        self.reconnected_at = time.monotonic()
        self._reconcile()

    def _reconcile(self, *, silent: bool = False) -> None:
        """Ask ComfyUI directly: after a dropped socket or a long silence, messages may be gone."""
        self.last_message = time.monotonic()
        try:
            where = self._locate()
        except ComfyUIError as exc:
            logger.warning("job %s: reconcile failed: %s", self.job.id, exc)
            return
        if where == "running" and silent:
            # ComfyUI keeps one socket per client id, and when it notices the death of an old
            # socket late it unregisters the new one with the same id: a running prompt whose
            # events stopped reaching us needs a fresh socket (which also hears the current node).
            logger.info("job %s: running in ComfyUI but silent here; reopening the socket", self.job.id)
            self._close_socket()
            time.sleep(0.2)
            self.socket = self._connect_until_deadline()
            self.reconnected_at = time.monotonic()
        if where == "history":
            self._finish()
        if where is None:
            self._fail(
                Failure(
                    FailureCategory.LOST,
                    "the prompt is neither in ComfyUI's queue nor in its history (ComfyUI restarted?)",
                )
            )

    # --- the timeline ------------------------------------------------------------------------

    def _event(self, kind: str, *, node_id: str = "", data: dict | None = None, at: datetime | None = None) -> None:
        # The seq is given when the batch is stored (jobs.services.job_progress_save).
        self.pending_events.append(
            JobEvent(job=self.job, seq=0, kind=kind, at=at or timezone.now(), node_id=node_id, data=data or {})
        )
        self.db_dirty = True

    def _record_happenings(self) -> None:
        now = timezone.now()
        for kind, node_id, data in self.progress.drain_happenings():
            class_type = str(self.job.workflow.get(node_id, {}).get("class_type", ""))
            if kind == "node_started":
                self.node_started_at[node_id] = now
                name = self.progress.display_names.get(class_type, class_type)
                self._event(
                    EventKind.NODE_STARTED, node_id=node_id, data={"class_type": class_type, "name": name}, at=now
                )
            elif kind == "node_finished":
                started = self.node_started_at.pop(node_id, None)
                duration = (now - started).total_seconds() if started else None
                self._event(
                    EventKind.NODE_FINISHED,
                    node_id=node_id,
                    data={"class_type": class_type, "seconds": duration, "steps": data.get("steps")},
                    at=now,
                )
                if started is not None:
                    self._timing(node_id, class_type, started, now, data.get("steps"))
            elif kind == "nodes_cached":
                self._event(EventKind.NODES_CACHED, data=data, at=now)

    def _timing(
        self, node_id: str, class_type: str, started: datetime, finished: datetime, steps: float | None
    ) -> None:
        self.pending_timings.append(
            NodeTiming(
                job=self.job,
                attempt=self.job.attempt,
                node_id=node_id,
                class_type=class_type,
                backend=self.job.backend,
                fingerprint=self.job.fingerprint,
                started_at=started,
                finished_at=finished,
                duration=(finished - started).total_seconds(),
                steps=int(steps) if steps else None,
            )
        )

    def _sample_steps(self, message: WsMessage) -> None:
        # Steps arrive ~100 times a second; the timeline keeps a sample now and then.
        if message.type != "progress" or self.progress.step_max is None:
            return
        now = time.monotonic()
        final_step = self.progress.step_value == self.progress.step_max
        if now - self.last_step_sample < settings.TRACKER_STEP_SAMPLE_SECONDS and not final_step:
            return
        self.last_step_sample = now
        self._event(
            EventKind.STEPS,
            node_id=self.progress.current_node or "",
            data={"value": self.progress.step_value, "max": self.progress.step_max},
        )

    def _keep_preview(self, frame: PreviewFrame) -> None:
        # Type-1 frames name no prompt; on our own client id they can only be ours.
        if frame.prompt_id not in (None, self.prompt_id):
            return
        now = time.monotonic()
        if now - self.last_preview < settings.TRACKER_PREVIEW_INTERVAL:
            return
        self.last_preview = now
        services.job_preview_store(self.job, frame.image, frame.media_type)
        self.dirty = True

    # --- coalescing --------------------------------------------------------------------------

    def _sync_progress_fields(self) -> None:
        job, progress = self.job, self.progress
        job.current_node_id = progress.current_node or ""
        job.current_node_class = progress.current_class
        job.current_node_name = progress.current_name
        job.current_node_category = progress.current_category
        job.step_value = progress.step_value
        job.step_max = progress.step_max
        job.nodes_total = progress.nodes_total
        job.nodes_done = progress.nodes_done
        job.cached_nodes = sorted(progress.cached)
        job.progress = progress.fraction
        job.eta_finish_at = self._eta_finish_at()

    def _eta_finish_at(self) -> datetime | None:
        current = self.progress.current_node
        started = self.node_started_at.get(current) if current else None
        remaining = eta.remaining_seconds(
            self.estimates,
            to_run=self.progress.to_run,
            done=self.progress.done,
            cached=self.progress.cached,
            current_node=current,
            step_value=self.progress.step_value,
            step_max=self.progress.step_max,
            current_started_seconds_ago=(timezone.now() - started).total_seconds() if started else None,
        )
        return timezone.now() + timedelta(seconds=remaining) if remaining is not None else None

    def _flush_if_due(self, *, force: bool = False, hold_broadcast: bool = False) -> None:
        now = time.monotonic()
        if force:
            # Closing or changing status: store everything, then send everything stored.
            self._write_if_due(now, force=True)
            self._broadcast_if_due(now, force=True)
        else:
            # The browsers never wait for the database: events stored by this write go out with
            # the next broadcast, at most TRACKER_BROADCAST_INTERVAL later.
            quiet_for_long = now - self.last_broadcast >= settings.TRACKER_BROADCAST_INTERVAL + BROADCAST_QUIET_SECONDS
            if not hold_broadcast or quiet_for_long:
                self._broadcast_if_due(now)
            self._write_if_due(now)
        self._beat_if_due()

    def _write_if_due(self, now: float, *, force: bool = False) -> None:
        if (self.db_dirty or self.dirty) and (force or now - self.last_db_write >= settings.TRACKER_DB_INTERVAL):
            self._sync_progress_fields()
            # Events reach browsers only once stored, so a client that reconnects with the last
            # seq it saw can always fetch what it missed.
            if services.job_progress_save(self.job, self.pending_events, self.pending_timings):
                self.unsent_events.extend(self.pending_events)
            self.pending_events, self.pending_timings = [], []
            self.db_writes += 1
            self.last_db_write = now
            self.db_dirty = False

    def _broadcast_if_due(self, now: float, *, force: bool = False) -> None:
        if (self.dirty or self.unsent_events) and (
            force or now - self.last_broadcast >= settings.TRACKER_BROADCAST_INTERVAL
        ):
            self._sync_progress_fields()
            self.job.version = services.next_version(self.job)
            self.db_dirty = True  # the stored version must catch up
            services.job_broadcast_now(self.job, self.unsent_events)
            self.unsent_events = []
            self.broadcasts += 1
            self.last_broadcast = now
            self.dirty = False

    def _beat_if_due(self) -> None:
        now = time.monotonic()
        if self.job.status == JobStatus.QUEUED:
            return  # not ours yet: the queued -> submitted compare-and-set decides
        if now - self.last_db_write >= heartbeat_seconds():
            services.job_heartbeat(self.job)
            self.db_writes += 1
            self.last_db_write = now

    # --- cancel, stuck, timeout -----------------------------------------------------------------

    def _check_db_if_due(self) -> None:
        """Has someone asked to cancel, or taken the job from us (a sweep closed or requeued it)?"""
        now = time.monotonic()
        if now - self.last_db_check < settings.TRACKER_DB_INTERVAL:
            return
        self.last_db_check = now
        status, prompt_id, cancel_requested_at = (
            Job.objects.filter(pk=self.job.pk).values_list("status", "prompt_id", "cancel_requested_at").get()
        )
        if status not in (JobStatus.SUBMITTED, JobStatus.RUNNING) or str(prompt_id) != self.prompt_id:
            logger.info("job %s is %s elsewhere; this tracker stops", self.job.id, status)
            self.job.refresh_from_db()
            raise TrackingEnded
        if cancel_requested_at is not None:
            self._stop_prompt(reason=None)

    def _stop_prompt(self, reason: Failure | None) -> None:
        """Remove a waiting prompt, interrupt a running one. `reason` None means a user's cancel."""
        now = time.monotonic()
        if self.interrupt_sent_at is not None:
            if now - self.interrupt_sent_at > STOP_GRACE_SECONDS:
                # A node that never yields cannot be interrupted; this GPU's ComfyUI needs a
                # restart. Stop following, so the job is accounted for and the worker is free.
                if reason is None:
                    self._event(EventKind.NOTE, data={"message": "cancelled; ComfyUI did not stop the prompt"})
                    self._close(JobStatus.CANCELLED)
                self._fail(
                    Failure(reason.category, f"{reason.message}; ComfyUI did not stop the prompt", reason.details)
                )
            if now - self.interrupt_resent_at < 5.0:
                return
        self.interrupt_reason = reason
        try:
            where = self.client.queue().position(self.prompt_id)
            if where == "pending":
                # /interrupt only stops a running prompt; a waiting one is deleted from the queue.
                self.client.delete_from_queue([self.prompt_id])
                if reason is None:
                    self._close(JobStatus.CANCELLED)
                self._fail(reason)
            elif where == "running":
                self.client.interrupt(self.prompt_id)
                self.interrupt_sent_at = self.interrupt_sent_at or now
                self.interrupt_resent_at = now
        except ComfyUIError as exc:
            logger.warning("job %s: could not stop the prompt: %s", self.job.id, exc)

    def _check_stuck(self) -> None:
        now = time.monotonic()
        if self.interrupt_sent_at is not None:
            self._stop_prompt(self.interrupt_reason)
            return
        if now - self.started_monotonic > settings.JOB_MAX_SECONDS:
            self._stop_prompt(
                Failure(FailureCategory.TIMED_OUT, f"ran longer than the maximum of {settings.JOB_MAX_SECONDS}s")
            )
            return
        silent = now - self.last_progress
        if self.job.status == JobStatus.RUNNING and silent > self._stuck_threshold():
            node = self.progress.current_name or self.progress.current_node or "?"
            self._stop_prompt(
                Failure(
                    FailureCategory.STUCK,
                    f"no progress for {silent:.0f}s in {node}",
                    {"node_id": self.progress.current_node},
                )
            )

    def _stuck_threshold(self) -> float:
        expected = self.estimates.get(self.progress.current_node or "")
        usual = expected.seconds if expected is not None and expected.samples else 0.0
        return max(settings.JOB_STUCK_FLOOR_SECONDS, settings.JOB_STUCK_FACTOR * usual)

    # --- ending ------------------------------------------------------------------------------

    def _finish(self) -> None:
        entry = self._history_when_ready()
        outcome = self.progress.outcome
        if entry is not None and outcome is None:
            outcome = "success" if entry.status_str == "success" else _history_outcome(entry)
        if outcome == "success":
            if entry is not None:
                # We may not have heard every node (a dropped socket): ComfyUI's word settles it.
                self.progress.complete((entry.message("execution_cached") or {}).get("nodes") or [])
            self._store_outputs(entry)
            self._close(JobStatus.COMPLETED)
        if outcome == "interrupted":
            if self.interrupt_reason is not None:
                self._fail(self.interrupt_reason)
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
                stored = services.job_output_store(self.job, self.client, output)
            except ComfyUIError as exc:
                self._fail(
                    Failure(
                        FailureCategory.OUTPUT_MISSING,
                        f"output {output.filename} of node {output.node_id} could not be fetched: {exc}",
                        {"node_id": output.node_id, "filename": output.filename},
                    )
                )
            self._event(
                EventKind.OUTPUT,
                node_id=output.node_id,
                data={"output_id": stored.pk, "filename": output.filename, "media_type": stored.media_type},
            )

    def _transition(self, status: str, *, expected: str, **fields) -> bool:
        self._flush_if_due(force=True)
        self._sync_progress_fields()
        moved = services.job_transition(
            self.job, status, expected=expected, **services.progress_values(self.job), **fields
        )
        if moved:
            self.db_writes += 1
            self.broadcasts += 1
            self.last_broadcast = self.last_db_write = time.monotonic()
            self.dirty = self.db_dirty = False
        elif self.job.is_final or self.job.status == JobStatus.QUEUED:
            raise TrackingEnded
        return moved

    def _close(self, status: str) -> None:
        self._flush_if_due(force=True)
        if not self.job.is_final:
            self._sync_progress_fields()
            services.job_close(self.job, status, **services.progress_values(self.job))
        raise TrackingEnded

    def _fail(self, failure: Failure) -> None:
        self._flush_if_due(force=True)
        if not self.job.is_final:
            self._event(
                EventKind.ERROR,
                node_id=str(failure.details.get("node_id") or ""),
                data={"category": failure.category, "message": failure.message[:2000]},
            )
            self._flush_if_due(force=True)
            services.job_fail(self.job, failure.category, failure.message, failure.details)
        logger.info("job %s attempt failed: %s: %s", self.job.id, failure.category, failure.message)
        raise TrackingEnded


def _history_outcome(entry: HistoryEntry) -> str:
    if entry.message("execution_interrupted") is not None:
        return "interrupted"
    return "error"
