"""How a tracked attempt ends: ComfyUI's history settles the outcome, the outputs are fetched,
and the job is closed completed, cancelled or failed (with its category)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import NoReturn

from django.conf import settings

from assets.object_store import STORE_ERRORS
from comfyui import ComfyUIClient, ComfyUIError, HistoryEntry, OutputFile, history_outputs
from comfyui.errors import OutputTooLarge
from jobs import services
from jobs.failures import (
    Failure,
    OutputReport,
    failure_from_execution_error,
    failure_from_interruption,
    failure_from_outputs,
)
from jobs.models import EventKind, FailureCategory, Job, JobOutput, JobStatus
from jobs.output_files import OutputKey, output_label
from jobs.progress import JobProgress
from jobs.tracking.coalescer import Coalescer
from jobs.tracking.timeline import Timeline

logger = logging.getLogger(__name__)

HISTORY_WAIT_SECONDS = 10.0
# Outputs past JOB_MAX_OUTPUTS are named on the timeline up to this many characters of names.
SKIPPED_LIST_CHARS = 128 * 1024
# Waits between attempts to store an output while the file store is down: 1, 2, 4, 8, 15, 15 ... s,
# for at most STORAGE_RETRY_SECONDS in all.
STORE_RETRY_FIRST_SECONDS = 1.0
STORE_RETRY_MAX_SECONDS = 15.0


class StoreStillDown(OSError):
    """An output not tried because the file store already stayed down for this job."""


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
        gpu_freed: Callable[[], None] | None = None,
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
        # The file store stayed down past STORAGE_RETRY_SECONDS: the outputs left are not tried again.
        self.store_down = False
        # Stored by this ending; their thumbnails are made once the job's end is sent (close, fail).
        self.stored: list[JobOutput] = []
        # Called once when ComfyUI is done with the prompt, before its outputs are fetched: the
        # backend's next prompt goes in then (jobs.tracking.shift), so the GPU never waits for them.
        self.gpu_freed = gpu_freed
        # The job's stored outputs, when known without reading them (JobTracker: a job's first
        # delivery has none); else read before storing, so that a tracker taking over stores none twice.
        self.kept: dict[OutputKey, JobOutput] | None = None

    def finish(self) -> NoReturn:
        """ComfyUI is done with the prompt: close the job as its history says."""
        self._hand_over_gpu()
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

    def _hand_over_gpu(self) -> None:
        hook, self.gpu_freed = self.gpu_freed, None
        if hook is not None:
            hook()

    def close(self, status: str) -> NoReturn:
        if self.job.is_final:
            self.coalescer.flush_if_due(force=True)
        else:
            self.coalescer.close(status)
        services.job_thumbnails_make(self.job, self.stored)
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
        logger.info("job %s attempt failed: %s: %s", self.job.id, failure.category, failure.message[:500])
        services.job_thumbnails_make(self.job, self.stored)  # of what was stored before it failed
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
        """Every output ComfyUI listed, up to JOB_MAX_OUTPUTS, each as far as the caps allow; what is
        not stored is named on the timeline with the reason, and jobs.failures.failure_from_outputs
        decides whether the job still completed."""
        if entry is None:
            self.fail(Failure(FailureCategory.OUTPUT_MISSING, "ComfyUI kept no history for the finished prompt"))
        listed = history_outputs(entry)
        limit = settings.JOB_MAX_OUTPUTS
        report = OutputReport(listed=len(listed), too_many=max(len(listed) - limit, 0))
        kept = self.kept if self.kept is not None else services.job_outputs_read(self.job)
        for output in listed[:limit]:
            self._store_output(output, report, kept)
        services.job_outputs_known(self.job, kept.values())
        if report.too_many:
            self._note_too_many(listed[limit:], limit)
        failure = failure_from_outputs(report)
        if failure is not None:
            self.fail(failure)

    def _store_output(self, output: OutputFile, report: OutputReport, kept: dict[OutputKey, JobOutput]) -> None:
        label = output_label(output)
        try:
            stored = self._stored_while_store_recovers(output, kept)
        except STORE_ERRORS as exc:
            report.unstored.append(f"{label}: {type(exc).__name__}: {exc}")
            self._note_skipped(output, "storage_unavailable", f"{label} could not be stored: {exc}")
            return
        except OutputTooLarge as exc:
            report.too_large += 1
            self._note_skipped(output, "too_large", f"{label}: larger than {exc.limit} bytes; not stored")
            return
        except ComfyUIError as exc:
            report.unfetched.append(f"{label}: {exc}")
            self._note_skipped(output, "unfetchable", f"{label} could not be fetched: {exc}")
            return
        report.stored += 1
        self.stored.append(stored)
        self.timeline.event(
            EventKind.OUTPUT,
            node_id=output.node_id,
            data={"output_id": stored.pk, "filename": stored.comfy_filename, "media_type": stored.media_type},
        )

    def _stored_while_store_recovers(self, output: OutputFile, kept: dict[OutputKey, JobOutput]) -> JobOutput:
        """One output fetched and stored, tried again with backoff while the file store is down (an
        S3 endpoint that refuses or times out, a full disk), for at most STORAGE_RETRY_SECONDS. Each
        try fetches the file from ComfyUI afresh (a download cut off by the store leaves nothing
        behind: services.job_output_store), and the job stays running meanwhile: it completes only
        with its outputs stored. Raises the store's last error when it stays down."""
        if self.store_down:
            raise StoreStillDown("the file store was down for this job's earlier outputs; not tried again")
        deadline = time.monotonic() + settings.STORAGE_RETRY_SECONDS
        delay = STORE_RETRY_FIRST_SECONDS
        tries = 0
        while True:
            tries += 1
            try:
                return services.job_output_store(self.job, self.client, output, kept=kept)
            except STORE_ERRORS as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.store_down = True
                    logger.warning("job %s: the file store stayed down after %d tries: %s", self.job.id, tries, exc)
                    raise
                if tries == 1:
                    self.timeline.event(
                        EventKind.NOTE,
                        node_id=output.node_id,
                        data={
                            "message": f"the file store is unavailable ({type(exc).__name__}); storing "
                            f"{output_label(output)} is retried for up to {settings.STORAGE_RETRY_SECONDS:.0f}s",
                            "reason": "storage_retry",
                        },
                    )
                self._wait_beating(min(delay, left))
                delay = min(delay * 2, STORE_RETRY_MAX_SECONDS)

    def _wait_beating(self, seconds: float) -> None:
        """Sleep, keeping the job's heartbeat fresh so that no sweep takes it for an orphan."""
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            self.coalescer.flush_if_due()
            time.sleep(min(left, 1.0))

    def _note_skipped(self, output: OutputFile, reason: str, message: str) -> None:
        self.timeline.event(
            EventKind.NOTE,
            node_id=output.node_id,
            data={"message": message[:2000], "output_skipped": output_label(output), "reason": reason},
        )

    def _note_too_many(self, skipped: list[OutputFile], limit: int) -> None:
        # One event naming them, bounded: it is stored and broadcast like any other.
        names: list[str] = []
        size = 0
        for output in skipped:
            label = output_label(output)
            size += len(label)
            if size > SKIPPED_LIST_CHARS:
                break
            names.append(label)
        self.timeline.event(
            EventKind.NOTE,
            data={
                "message": f"{len(skipped)} outputs past the limit of {limit} per job were not stored",
                "reason": "too_many",
                "skipped": len(skipped),
                "outputs_skipped": names,
                "unlisted": len(skipped) - len(names),
            },
        )


def prompt_abandon(client: ComfyUIClient, prompt_id: str) -> None:
    """Take a prompt whose job ends without us out of ComfyUI (removed if waiting, interrupted if
    running), so the GPU does not work on for nobody. Best effort: it runs in error handlers."""
    try:
        where = client.queue().position(prompt_id)
        if where == "pending":
            client.delete_from_queue([prompt_id])
        elif where == "running":
            client.interrupt(prompt_id)
    except Exception as exc:
        logger.warning("prompt %s: could not take it out of ComfyUI: %s", prompt_id, exc)


def _history_outcome(entry: HistoryEntry) -> str:
    if entry.message("execution_interrupted") is not None:
        return "interrupted"
    return "error"
