"""While a job runs: has someone cancelled it or taken it from us, is it stuck, has it run too long?
Then stop the prompt in ComfyUI (a waiting one is removed, a running one interrupted)."""

from __future__ import annotations

import logging
import time
from typing import NoReturn

from django.conf import settings

from comfyui import ComfyUIClient, ComfyUIError
from jobs.eta import NodeEstimate
from jobs.failures import Failure, stuck_or_timed_out
from jobs.models import EventKind, Job, JobStatus
from jobs.progress import JobProgress
from jobs.tracking.coalescer import Coalescer
from jobs.tracking.ending import JobEnding, TrackingEnded
from jobs.tracking.timeline import Timeline

logger = logging.getLogger(__name__)

# How long an interrupted prompt may take to stop before the tracker gives up on it.
STOP_GRACE_SECONDS = 30.0
INTERRUPT_RESEND_SECONDS = 5.0


class Watchdog:
    def __init__(
        self,
        job: Job,
        client: ComfyUIClient,
        *,
        prompt_id: str,
        progress: JobProgress,
        estimates: dict[str, NodeEstimate],
        timeline: Timeline,
        coalescer: Coalescer,
        ending: JobEnding,
    ) -> None:
        self.job = job
        self.client = client
        self.prompt_id = prompt_id
        self.progress = progress
        self.estimates = estimates
        self.timeline = timeline
        self.coalescer = coalescer
        self.ending = ending
        self.started_monotonic = time.monotonic()
        self.last_progress = time.monotonic()
        self.last_db_check = 0.0
        self.interrupt_sent_at: float | None = None
        self.interrupt_resent_at = 0.0

    def progressed(self) -> None:
        self.last_progress = time.monotonic()

    def check_db_if_due(self) -> None:
        """Has someone asked to cancel, or taken the job from us (a sweep closed or requeued it)?"""
        now = time.monotonic()
        if now - self.last_db_check < settings.TRACKER_DB_INTERVAL:
            return
        if self.coalescer.saved is not None and now - self.coalescer.saved[0] < settings.TRACKER_DB_INTERVAL:
            # The progress write told as much: the job is still ours, and whether a cancel came.
            self.last_db_check, saved = self.coalescer.saved
            if saved.cancel_requested:
                self.stop_prompt(reason=None)
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
            self.stop_prompt(reason=None)

    def check_stuck(self) -> None:
        now = time.monotonic()
        if self.interrupt_sent_at is not None:
            self.stop_prompt(self.ending.interrupt_reason)
            return
        current = self.progress.current_node
        failure = stuck_or_timed_out(
            running_seconds=now - self.started_monotonic,
            silent_seconds=now - self.last_progress if self.job.status == JobStatus.RUNNING else None,
            expected=self.estimates.get(current or ""),
            node_id=current,
            node_name=self.progress.current_name or current or "?",
        )
        if failure is not None:
            self.stop_prompt(failure)

    def stop_prompt(self, reason: Failure | None) -> None:
        """Remove a waiting prompt, interrupt a running one. `reason` None means a user's cancel."""
        now = time.monotonic()
        if self.interrupt_sent_at is not None:
            if now - self.interrupt_sent_at > STOP_GRACE_SECONDS:
                self._give_up(reason)
            if now - self.interrupt_resent_at < INTERRUPT_RESEND_SECONDS:
                return
        self.ending.interrupt_reason = reason
        try:
            where = self.client.queue().position(self.prompt_id)
            if where == "pending":
                # /interrupt only stops a running prompt; a waiting one is deleted from the queue.
                self.client.delete_from_queue([self.prompt_id])
                self._end_stopped(reason)
            elif where == "running":
                self.client.interrupt(self.prompt_id)
                self.interrupt_sent_at = self.interrupt_sent_at or now
                self.interrupt_resent_at = now
        except ComfyUIError as exc:
            logger.warning("job %s: could not stop the prompt: %s", self.job.id, exc)

    def _end_stopped(self, reason: Failure | None) -> NoReturn:
        if reason is None:
            self.ending.close(JobStatus.CANCELLED)
        self.ending.fail(reason)

    def _give_up(self, reason: Failure | None) -> NoReturn:
        # A node that never yields cannot be interrupted; this GPU's ComfyUI needs a restart.
        # Stop following, so the job is accounted for and the worker is free.
        if reason is None:
            self.timeline.event(EventKind.NOTE, data={"message": "cancelled; ComfyUI did not stop the prompt"})
            self.ending.close(JobStatus.CANCELLED)
        self.ending.fail(Failure(reason.category, f"{reason.message}; ComfyUI did not stop the prompt", reason.details))
