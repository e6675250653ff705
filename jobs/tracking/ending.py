"""How a tracked attempt ends: ComfyUI's history settles the outcome, the outputs are fetched,
and the job is closed completed, cancelled or failed (with its category)."""

from __future__ import annotations

import logging
import time
from typing import NoReturn

from comfyui import ComfyUIClient, ComfyUIError, HistoryEntry, history_outputs
from jobs import services
from jobs.failures import Failure, failure_from_execution_error, failure_from_interruption
from jobs.models import EventKind, FailureCategory, Job, JobStatus
from jobs.progress import JobProgress
from jobs.tracking.coalescer import Coalescer
from jobs.tracking.timeline import Timeline

logger = logging.getLogger(__name__)

HISTORY_WAIT_SECONDS = 10.0


class TrackingEnded(Exception):
    """The job reached a final status (or went back to the queue); nothing more to follow."""


class JobEnding:
    def __init__(
        self,
        job: Job,
        client: ComfyUIClient,
        *,
        prompt_id: str,
        progress: JobProgress,
        timeline: Timeline,
        coalescer: Coalescer,
    ) -> None:
        self.job = job
        self.client = client
        self.prompt_id = prompt_id
        self.progress = progress
        self.timeline = timeline
        self.coalescer = coalescer
        # Why we interrupted the prompt ourselves (None: a user's cancel), so that ComfyUI's
        # "interrupted" is not taken for someone else's.
        self.interrupt_reason: Failure | None = None

    def finish(self) -> NoReturn:
        """ComfyUI is done with the prompt: close the job as its history says."""
        entry = self._history_when_ready()
        outcome = self.progress.outcome
        if entry is not None and outcome is None:
            outcome = "success" if entry.status_str == "success" else _history_outcome(entry)
        if outcome == "success":
            if entry is not None:
                # We may not have heard every node (a dropped socket): ComfyUI's word settles it.
                self.progress.complete((entry.message("execution_cached") or {}).get("nodes") or [])
            self._store_outputs(entry)
            self.close(JobStatus.COMPLETED)
        if outcome == "interrupted":
            self._end_interrupted(entry)
        data = self.progress.error or (entry.message("execution_error") if entry else None) or {}
        self.fail(failure_from_execution_error(data))

    def close(self, status: str) -> NoReturn:
        self.coalescer.flush_if_due(force=True)
        if not self.job.is_final:
            self.coalescer.sync_progress_fields()
            services.job_close(self.job, status, **services.progress_values(self.job))
        raise TrackingEnded

    def fail(self, failure: Failure) -> NoReturn:
        self.coalescer.flush_if_due(force=True)
        if not self.job.is_final:
            self.timeline.event(
                EventKind.ERROR,
                node_id=str(failure.details.get("node_id") or ""),
                data={"category": failure.category, "message": failure.message[:2000]},
            )
            self.coalescer.flush_if_due(force=True)
            services.job_fail(self.job, failure.category, failure.message, failure.details)
        logger.info("job %s attempt failed: %s: %s", self.job.id, failure.category, failure.message)
        raise TrackingEnded

    def _end_interrupted(self, entry: HistoryEntry | None) -> NoReturn:
        if self.interrupt_reason is not None:
            self.fail(self.interrupt_reason)
        if services.job_cancel_requested(self.job):
            self.close(JobStatus.CANCELLED)
        data = self.progress.error or (entry.message("execution_interrupted") if entry else None) or {}
        self.fail(failure_from_interruption(data))

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
            self.fail(Failure(FailureCategory.OUTPUT_MISSING, "ComfyUI kept no history for the finished prompt"))
        for output in history_outputs(entry):
            try:
                stored = services.job_output_store(self.job, self.client, output)
            except ComfyUIError as exc:
                self.fail(
                    Failure(
                        FailureCategory.OUTPUT_MISSING,
                        f"output {output.filename} of node {output.node_id} could not be fetched: {exc}",
                        {"node_id": output.node_id, "filename": output.filename},
                    )
                )
            self.timeline.event(
                EventKind.OUTPUT,
                node_id=output.node_id,
                data={"output_id": stored.pk, "filename": output.filename, "media_type": stored.media_type},
            )


def _history_outcome(entry: HistoryEntry) -> str:
    if entry.message("execution_interrupted") is not None:
        return "interrupted"
    return "error"
