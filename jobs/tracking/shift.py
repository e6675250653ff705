"""A backend's shift: the waiting jobs it can run, one after another, each followed to its end.

The GPU is free the moment ComfyUI is done with a prompt, not when its job is closed: fetching and
storing the outputs (a video to an object store takes seconds), making thumbnails and publishing the
end come after. So the next job is taken before: when the running prompt is expected to end within
HANDOVER_AHEAD_SECONDS (the tracker's `nearly_done`, only when history knows every node left), its
prompt goes into ComfyUI's own queue behind the running one, and the GPU goes from one to the next
without waiting for us; at the latest when ComfyUI is done (JobEnding's `gpu_freed`). The ended job's
outputs are stored while ComfyUI already runs the next one, whose messages wait in its socket until
its tracker reads them. The heartbeats of
both, the job being closed and the job whose tracker is not reading yet, are kept meanwhile by a
thread each (one UPDATE a beat), so no sweep takes either for an orphan however long the outputs take.

What is left after a job (its socket closed, its node timings learned) waits until the next prompt
is in, or nothing came.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, connection

from comfyui import ComfyUIClient
from fleet.backends import backend_client
from jobs import dispatch, eta, services
from jobs.models import Job
from jobs.node_catalog import node_catalog
from jobs.tracking.claim import heartbeat_seconds
from jobs.tracking.stopped import tracking_stopped
from jobs.tracking.tracker import JobTracker

logger = logging.getLogger(__name__)


class HeartbeatKeeper:
    """Beats for an active job whose tracker cannot for now: one whose outputs are being stored after
    it handed the GPU over, or one whose prompt went in while the job before it was being closed."""

    def __init__(self, job: Job) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, args=(job.pk, job.prompt_id), name=f"heartbeat-{job.pk}", daemon=True
        )
        self._thread.start()

    def _beat(self, job_id: object, prompt_id: object) -> None:
        try:
            while not self._stop.wait(heartbeat_seconds()):
                try:
                    services.job_heartbeat_attempt(job_id, prompt_id)
                except DatabaseError as exc:  # the tracker rides an outage out; so does its heartbeat
                    logger.warning("job %s: heartbeat not written: %s", job_id, exc)
        finally:
            connection.close()  # this thread's own

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Started:
    """A job whose prompt is in ComfyUI, with the tracker that will follow it."""

    job: Job
    tracker: JobTracker
    keeper: HeartbeatKeeper | None = None


class Shift:
    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.taken = 0
        self.successor: Started | None = None  # taken when the job before handed the GPU over
        self.closing: HeartbeatKeeper | None = None  # beats for the job handing over until it is closed
        self.leftovers: list[Callable[[], None]] = []

    def run(self, *, woken: bool = False) -> int:
        """Take, follow, take the next, until nothing waits that this backend can run. Returns the
        jobs taken. `woken`: a wake asked for the first take (jobs.dispatch.job_take_next)."""
        try:
            while True:
                started, self.successor = self.successor or self._take(ending=None, woken=woken), None
                woken = False
                cleaned = bool(self.leftovers)
                _run_all(self.leftovers)  # the next prompt is in (or nothing came)
                if started is None and cleaned:
                    # A job made while the last one was cleaned up after is taken now: its wake
                    # waits in the broker until this task ends (a 4-5 ms round trip more).
                    started = self._take(ending=None)
                if started is None:
                    return self.taken
                self.leftovers.append(self._follow(started))
        finally:
            if self.successor is not None:
                # Taken while the job before ended, then the shift was stopped: the orphan sweep (or
                # this wake, delivered again) re-attaches to its prompt.
                if self.successor.keeper is not None:
                    self.successor.keeper.stop()
                self.leftovers.append(_after(self.successor.job, self.successor.tracker))
            _run_all(self.leftovers)

    def _take(self, ending: Job | None, *, woken: bool = False) -> Started | None:
        """The best waiting job this backend can run, with its prompt in ComfyUI; None when nothing
        fits. A job that ends while starting (its prompt refused) is passed over for the next."""
        while True:
            with ExitStack() as held:
                # The taken job's new status and the queue's move are told once its prompt is in ComfyUI.
                held.enter_context(services.queue_moves_held())
                held.enter_context(services.publications_held())
                job = dispatch.job_take_next(self.backend, ending=ending, woken=woken, held=held)
                if job is None:
                    return None
                self.taken += 1
                started = self._start(job, held.close)
            if started is not None:
                return started

    def _start(self, job: Job, submitted: Callable[[], None]) -> Started | None:
        client: ComfyUIClient | None = None
        tracker: JobTracker | None = None
        try:
            client = backend_client(job.backend)
            tracker = JobTracker(
                job,
                client,
                client_id=job.client_id,
                catalog=node_catalog(job.backend, client),
                taken=True,
                gpu_freed=lambda: self._hand_over(job),
                nearly_done=lambda: self._take_ahead(job) if settings.HANDOVER_AHEAD_SECONDS > 0 else None,
            )
            tracker.start(submitted=submitted)
        except Exception as exc:
            tracking_stopped(job, exc, client, ours=lambda: True)
            self.leftovers.append(_after(job, tracker))
            return None
        return Started(job, tracker)

    def _hand_over(self, ending: Job) -> None:
        """ComfyUI is done with `ending`'s prompt: the next job's prompt goes in (unless it went in
        ahead) before the ended job's outputs are fetched, and a thread beats for the ended job."""
        self.closing = HeartbeatKeeper(ending)
        self._take_ahead(ending)

    def _take_ahead(self, ending: Job) -> None:
        """The next job's prompt goes into ComfyUI, which runs it as soon as it is done with
        `ending`'s: called when that is expected within HANDOVER_AHEAD_SECONDS, and when it is done.
        A failure here takes nothing: the shift takes again at the next call or once `ending` is closed."""
        if self.successor is not None:
            return
        try:
            self.successor = self._take(ending=ending)
        except Exception:
            logger.exception("backend %s: taking the next job while job %s ends failed", self.backend, ending.pk)
            return
        if self.successor is not None:
            self.successor.keeper = HeartbeatKeeper(self.successor.job)

    def _follow(self, started: Started) -> Callable[[], None]:
        if started.keeper is not None:
            started.keeper.stop()
        try:
            started.tracker.follow()
        except Exception as exc:
            tracking_stopped(started.job, exc, started.tracker.ending.client, ours=lambda: True)
        finally:
            if self.closing is not None:
                self.closing.stop()
                self.closing = None
        return _after(started.job, started.tracker)


def _after(job: Job, tracker: JobTracker | None) -> Callable[[], None]:
    def leftovers() -> None:
        if tracker is not None:
            tracker.close()
        # A shift's tracker followed the attempt from its submit: it timed every node (none read again).
        eta.history_learn(job, timed=tracker.timeline.timed if tracker is not None else None)

    return leftovers


def _run_all(calls: list[Callable[[], None]]) -> None:
    while calls:
        try:
            calls.pop(0)()
        except Exception:
            logger.exception("after a job: cleaning up failed")
