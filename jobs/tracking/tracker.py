"""One job, followed from submission to its end: the parts put together, and the loop that feeds
ComfyUI's messages to them."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from typing import Any, NoReturn

from django.conf import settings
from django.utils import timezone

from comfyui import ComfyUIClient, ComfyUIError, PreviewFrame, WsMessage
from jobs import eta, services
from jobs.eta import NodeEstimate
from jobs.failures import lost_failure
from jobs.models import EventKind, Job, JobStatus
from jobs.node_catalog import NodeCatalog
from jobs.progress import JobProgress
from jobs.tracking.coalescer import Coalescer
from jobs.tracking.database_outage import DATABASE_DOWN, DatabaseOutage, finish_again
from jobs.tracking.ending import JobEnding, TrackingEnded
from jobs.tracking.inputs import InputPlacement
from jobs.tracking.session import ComfySession
from jobs.tracking.timeline import Timeline
from jobs.tracking.watchdog import Watchdog

logger = logging.getLogger(__name__)

AHEAD_CHECK_SECONDS = 0.1  # how often a running prompt's expected end is compared with HANDOVER_AHEAD_SECONDS


class JobTracker:
    def __init__(
        self,
        job: Job,
        client: ComfyUIClient,
        *,
        client_id: str,
        catalog: NodeCatalog,
        taken: bool = False,
        gpu_freed: Callable[[], None] | None = None,
        nearly_done: Callable[[], None] | None = None,
    ) -> None:
        self.job = job
        self.client_id = client_id
        # Whether this tracker won the job (its queued -> submitted compare-and-set, or the backend
        # took it for this tracker: jobs.dispatch): then an unexpected error is this tracker's to end
        # the job with.
        self.taken = taken
        self.owns_job = taken
        prompt_id = str(job.prompt_id)
        self.progress = _job_progress(job, prompt_id, catalog, taken=taken)
        # Filled once the prompt is in ComfyUI (see _learn_estimates): the coalescer and the
        # watchdog hold this same dict, and until then simply know no ETA.
        self.estimates: dict[str, NodeEstimate] = {}
        estimates = self.estimates
        self.timeline = Timeline(job, self.progress, prompt_id=prompt_id)
        self.coalescer = Coalescer(job, self.progress, estimates, self.timeline)
        self.ending = JobEnding(
            job,
            client,
            prompt_id=prompt_id,
            progress=self.progress,
            timeline=self.timeline,
            coalescer=self.coalescer,
            gpu_freed=gpu_freed,
        )
        if taken and job.deliveries == 1:
            self.ending.kept = {}  # bound to a GPU for the first time, by this tracker's take: no outputs yet
        # Called once when ComfyUI is expected to be done with the prompt within HANDOVER_AHEAD_SECONDS:
        # the backend's next prompt goes into ComfyUI's queue behind this one (jobs.tracking.shift).
        self.nearly_done = nearly_done
        self.ahead_checked_at = 0.0
        self.pace_seen = False  # a node of this prompt has shown its pace (eta.pace_observed)
        self.found_in_history = False
        self.session = ComfySession(
            job, client, client_id=client_id, prompt_id=prompt_id, coalescer=self.coalescer, ending=self.ending
        )
        self.inputs = InputPlacement(job, client, timeline=self.timeline, coalescer=self.coalescer, ending=self.ending)
        self.watchdog = Watchdog(
            job,
            client,
            prompt_id=prompt_id,
            progress=self.progress,
            estimates=estimates,
            timeline=self.timeline,
            coalescer=self.coalescer,
            ending=self.ending,
        )

    def run(self) -> NoReturn:
        """Start the job and follow it until it ends, which raises TrackingEnded."""
        self.start()
        self.follow()

    def start(self, submitted: Callable[[], None] | None = None) -> None:
        """Win the job, connect, and submit its prompt (or find it in ComfyUI): the GPU is busy with
        it when this returns, and ComfyUI's messages wait in the socket until `follow` reads them.
        `submitted` is called once the prompt is in ComfyUI (the dispatcher's held announcements go
        out then). Raises TrackingEnded when the job ended already (a refused prompt, ComfyUI
        unreachable)."""
        fresh = self.taken or self.job.status == JobStatus.QUEUED
        # The job's new status and the queue's move are told once the prompt is in ComfyUI: a GPU
        # must not idle while browsers and the jobs still waiting hear of them.
        with services.queue_moves_held(), services.publications_held():
            # Win the job before touching ComfyUI: a duplicate delivery that loses here never opens
            # a socket with our client id (ComfyUI would route the prompt's events to it instead).
            if (
                fresh
                and not self.taken
                and not self._status_change(
                    JobStatus.SUBMITTED,
                    expected=JobStatus.QUEUED,
                    backend=self.job.backend,
                    client_id=self.client_id,
                    worker=socket.gethostname(),
                    heartbeat_at=timezone.now(),
                    deliveries=self.job.deliveries + 1,
                )
            ):
                raise TrackingEnded
            self.owns_job = True
            self.session.connect()
            where = self.session.locate_until_deadline() if self._may_be_in_comfyui(fresh) else None
            if where is None:
                if not fresh:
                    # A previous tracker submitted it; ComfyUI no longer has it.
                    self.ending.fail(lost_failure(self.job))
                self.session.submit(self.inputs.prompt())
        if submitted is not None:
            submitted()
        services.job_attempt_open(self.job, worker=socket.gethostname())
        self._learn_estimates()
        # Its expected end stored now, not at ComfyUI's first message: a prompt put in ahead waits
        # behind another, and the queue's ETA counts on every active job's.
        self.coalescer.mark_changed()
        self.coalescer.flush_if_due(force=True)
        self.found_in_history = where == "history"

    def follow(self) -> NoReturn:
        """Follow the started job until it ends (TrackingEnded)."""
        if self.found_in_history:
            self.ending.finish()
        self._follow()

    def close(self) -> None:
        logger.info(
            "job %s: %d ComfyUI messages, %d database writes, %d broadcasts",
            self.job.id,
            self.session.messages,
            self.coalescer.db_writes,
            self.coalescer.broadcasts,
        )
        self.session.close()

    def _follow(self) -> NoReturn:
        # The database down for a while (a PostgreSQL restart): ComfyUI is still followed and what
        # would be written waits for it to come back (jobs/tracking/database_outage.py).
        outage = DatabaseOutage(self.job)
        while True:
            try:
                message = self.session.receive(outage.receive_timeout(self.coalescer.wait_time()))
            except ComfyUIError as exc:
                logger.warning("job %s: %s; reconnecting", self.job.id, exc)
                self.session.reconnect()
                continue
            due = outage.retry_due()
            try:
                if due and self.progress.ended:
                    finish_again(self.ending, self.timeline, self.job)  # the first try met the outage
                # Broadcast on a message that changed what browsers see, or once ComfyUI went quiet:
                # not on the `progress_state` that precedes each step's `progress`, which would show
                # the step before.
                fresh = message is None
                if isinstance(message, WsMessage):
                    fresh = self._apply(message)
                elif isinstance(message, PreviewFrame) and self.timeline.keep_preview(message):
                    self.coalescer.mark_changed()
                if due:
                    self.coalescer.flush_if_due(hold_broadcast=not fresh)
                    self.watchdog.check_db_if_due()
                self.watchdog.check_stuck()
                self.session.reconcile_if_idle()
                self._hand_over_ahead_if_due()
            except DATABASE_DOWN as exc:
                outage.failed(exc)
                continue
            if due:
                outage.over()

    def _apply(self, message: WsMessage) -> bool:
        """Feed one message; True when what browsers see changed."""
        if not self.progress.apply(message):
            return False
        self.coalescer.mark_changed()
        self.watchdog.progressed()
        self.job.last_progress_at = timezone.now()
        self.timeline.record_happenings()
        self.timeline.sample_steps(message)
        if eta.pace_observed(self.progress.step_value, self.progress.step_max):
            self.pace_seen = True
        if self.progress.started and self.job.status == JobStatus.SUBMITTED:
            self._status_change(JobStatus.RUNNING, expected=JobStatus.SUBMITTED)
        if self.progress.ended:
            self.ending.finish()
        return True

    def _hand_over_ahead_if_due(self) -> None:
        """Once the prompt is expected to end within HANDOVER_AHEAD_SECONDS, call `nearly_done`.

        A guess must not bind the next job to this GPU a whole run early. History knows a node's
        class, not its inputs (a sampler's steps, a sleep's seconds), so the expectation rests on
        this prompt's own pace: only once a node of it has reported steps (the sampler), and counted
        by eta.remaining_seconds(by_pace=True).
        """
        if self.nearly_done is None or not self.progress.started or self.progress.ended or not self.pace_seen:
            return
        now = time.monotonic()
        if now - self.ahead_checked_at < AHEAD_CHECK_SECONDS:
            return
        self.ahead_checked_at = now
        remaining = self.coalescer.remaining_seconds(by_pace=True)
        if remaining is not None and remaining <= settings.HANDOVER_AHEAD_SECONDS:
            hook, self.nearly_done = self.nearly_done, None
            hook()

    def _learn_estimates(self) -> None:
        """What history knows of this job's nodes: the ETA and the progress weights.

        Learned after the prompt reached ComfyUI, never before: the query over node timings took
        seconds on a large history, and a GPU must not idle while we read it. ComfyUI's messages
        wait in the socket meanwhile; none is lost.
        """
        self.estimates.update(eta.node_estimates(self.job.backend, self.job.workflow, self.progress.to_run))
        # Nodes nothing is known about weigh as much as the average known node (JobProgress.weight).
        learned = eta.node_weights(self.estimates)
        self.progress.weights = {n: w for n, w in learned.items() if not self.estimates[n].is_default}

    def _may_be_in_comfyui(self, fresh: bool) -> bool:
        """Whether ComfyUI may already have this attempt's prompt, so /queue and /history must be
        asked before submitting. Not for a first attempt this tracker won from `queued`: only
        the winner of that compare-and-set submits, and a job goes back to `queued` only as a
        new attempt (services.job_requeue), which may keep the prompt id of one that reached ComfyUI."""
        return not fresh or self.job.attempt > 1

    def _status_change(self, status: str, *, expected: str, **fields: Any) -> bool:
        moved = self.coalescer.status_change(status, expected=expected, **fields)
        if not moved and (self.job.is_final or self.job.status == JobStatus.QUEUED):
            raise TrackingEnded
        return moved


def _job_progress(job: Job, prompt_id: str, catalog: NodeCatalog, *, taken: bool) -> JobProgress:
    """The job's progress model (weighted by history once the prompt is submitted)."""
    progress = JobProgress(
        prompt_id=prompt_id,
        workflow=job.workflow,
        display_names=catalog.display_names,
        output_classes=catalog.output_classes,
        categories=catalog.categories,
    )
    if job.status != JobStatus.QUEUED and not taken:
        _restore_progress(job, progress)
    return progress


def _restore_progress(job: Job, progress: JobProgress) -> None:
    """Taking over from a tracker that died: carry on from what it stored, so progress does
    not start again from zero (ComfyUI will not repeat what it already sent)."""
    progress.started = job.status == JobStatus.RUNNING
    progress.cached = set(job.cached_nodes)
    finished = job.events.filter(kind=EventKind.NODE_FINISHED)
    if job.submitted_at:
        finished = finished.filter(at__gte=job.submitted_at)
    progress.done = set(finished.values_list("node_id", flat=True))
    progress.current_node = job.current_node_id or None
    progress.fraction = job.progress
