"""Coalescing: the database and the browsers see the job's latest state at a bounded rate.

At most one progress write per TRACKER_DB_INTERVAL and one broadcast per TRACKER_BROADCAST_INTERVAL,
however fast ComfyUI reports, plus one of each per status change; a heartbeat when nothing else
was written for a while. The job lists get its progress at most once per
TRACKER_LIST_BROADCAST_INTERVAL (jobs.broadcast.ListPacer).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from jobs import eta, instruments, live_state, services
from jobs.broadcast import ListPacer, job_lists_broadcast
from jobs.eta import NodeEstimate
from jobs.models import ACTIVE_STATUSES, Job, JobEvent, JobStatus, column_width
from jobs.progress import JobProgress
from jobs.row_update import RowUpdated
from jobs.tracking.claim import heartbeat_seconds
from jobs.tracking.timeline import Timeline

# ComfyUI reports steps up to ~100 times a second: a broadcast due waits this much longer at most
# for the message that changes the state (see JobTracker._follow).
BROADCAST_QUIET_SECONDS = 0.05


class Coalescer:
    def __init__(self, job: Job, progress: JobProgress, estimates: dict[str, NodeEstimate], timeline: Timeline) -> None:
        self.job = job
        self.progress = progress
        self.estimates = estimates
        self.timeline = timeline
        self.dirty = False  # the browsers have not seen the latest state
        self.db_dirty = False  # the database has not stored the latest version
        self.unsent_events: list[JobEvent] = []
        self.last_db_write = 0.0
        self.last_broadcast = 0.0
        self.db_writes = 0
        self.broadcasts = 0
        # The latest progress write that found the job still ours (time.monotonic, what it found):
        # the watchdog needs no read of its own for a while after it.
        self.saved: tuple[float, RowUpdated] | None = None
        self.shape = live_state.TrackedJobShape()
        self.lists = ListPacer()

    def mark_changed(self) -> None:
        self.dirty = True

    def wait_time(self) -> float:
        """How long to wait for ComfyUI's next message before sending what is pending anyway."""
        if self.dirty or self.unsent_events:
            # Past the interval, the next state-changing message is broadcast at once; the timeout
            # only sends the last state when ComfyUI went quiet for BROADCAST_QUIET_SECONDS more.
            due = self._quiet_at()
        elif (lists_due_at := self.lists.catch_up_at()) is not None:
            due = max(lists_due_at, self._quiet_at())  # _lists_catch_up's moment
        else:
            return settings.COMFYUI_WS_TIMEOUT
        return min(max(due - time.monotonic(), 0.005), settings.COMFYUI_WS_TIMEOUT)

    def due_at(self) -> tuple[float, float]:
        """When (time.monotonic) a change would be broadcast, and written, at the earliest: progress
        held undecoded must be decoded by then (ComfySession.receive)."""
        return (
            self.last_broadcast + settings.TRACKER_BROADCAST_INTERVAL,
            self.last_db_write + settings.TRACKER_DB_INTERVAL,
        )

    def flush_if_due(self, *, force: bool = False, hold_broadcast: bool = False) -> None:
        now = time.monotonic()
        if force:
            # Closing or changing status: store everything, then send everything stored.
            self._write_if_due(now, force=True)
            self._broadcast_if_due(now, force=True)
        else:
            # The browsers never wait for the database: events stored by this write go out with
            # the next broadcast, at most TRACKER_BROADCAST_INTERVAL later.
            quiet_for_long = now >= self._quiet_at()
            if not hold_broadcast or quiet_for_long:
                self._broadcast_if_due(now)
            self._write_if_due(now)
            self._lists_catch_up(now)
        self.beat_if_due()

    def _quiet_at(self) -> float:
        """When the job's broadcasts have gone quiet: a next one, had anything changed (decoded or
        held undecoded by the session), would have gone out by then."""
        return self.last_broadcast + settings.TRACKER_BROADCAST_INTERVAL + BROADCAST_QUIET_SECONDS

    def _lists_catch_up(self, now: float) -> None:
        """The latest progress the job lists missed, to them alone, once their interval is up and the
        job's broadcasts went quiet. While they go on, the next one due goes to the lists too (they
        are due by then), so a steady stream costs no publish more."""
        behind = self.lists.behind
        if behind is not None and self.lists.due(now) and now >= self._quiet_at() and not self.dirty:
            job_lists_broadcast(behind, self.job.user_id)
            self.lists.sent(now, behind, to_lists=True)
            self.broadcasts += 1

    def beat_if_due(self) -> None:
        now = time.monotonic()
        if self.job.status == JobStatus.QUEUED:
            return  # not ours yet: the queued -> submitted compare-and-set decides
        if now - self.last_db_write >= heartbeat_seconds():
            services.job_heartbeat(self.job)
            self.db_writes += 1
            self.last_db_write = now

    def status_change(self, status: str, *, expected: str, **fields: Any) -> bool:
        """Store a status change at once, with everything pending: one write and one broadcast."""
        return self._changed(
            lambda pending: services.job_transition(
                self.job, status, expected=expected, pending=pending, **services.progress_values(self.job), **fields
            )
        )

    def close(self, status: str) -> bool:
        """Close the job (completed or cancelled) with everything pending: one write and one broadcast."""
        return self._changed(
            lambda pending: services.job_close(self.job, status, pending=pending, **services.progress_values(self.job))
        )

    def _changed(self, change: Callable[[services.Pending], bool]) -> bool:
        self.sync_progress_fields()
        ours = self.job.prompt_id
        moved = change(services.Pending(self.timeline.events, self.timeline.timings, self.unsent_events))
        if not moved:
            # Someone else moved the job first (the job was read again): what is pending is stored
            # as a write of its own would store it, only while the job is still active in this
            # attempt; never into the attempt that a sweep's requeue made since.
            if self.job.prompt_id == ours and self.job.status in ACTIVE_STATUSES:
                self.flush_if_due(force=True)
            return False
        self.timeline.clear_pending()
        self.unsent_events = []
        self.db_writes += 1
        self.broadcasts += 1
        self.last_broadcast = self.last_db_write = time.monotonic()
        self.lists.sent(self.last_broadcast, None, to_lists=True)  # a status change goes to every group
        self.dirty = self.db_dirty = False
        return True

    def sync_progress_fields(self) -> None:
        job, progress = self.job, self.progress
        # Node ids come from ComfyUI's messages, names from its /object_info: cut to their columns.
        job.current_node_id = _fit("current_node_id", progress.current_node or "")
        job.current_node_class = _fit("current_node_class", progress.current_class)
        job.current_node_name = _fit("current_node_name", progress.current_name)
        job.current_node_category = _fit("current_node_category", progress.current_category)
        job.step_value = progress.step_value
        job.step_max = progress.step_max
        job.nodes_total = progress.nodes_total
        job.nodes_done = progress.nodes_done
        job.cached_nodes = sorted(progress.cached)
        job.progress = progress.fraction
        job.eta_finish_at = self._eta_finish_at()

    def _eta_finish_at(self) -> datetime | None:
        remaining = self.remaining_seconds()
        return timezone.now() + timedelta(seconds=remaining) if remaining is not None else None

    def remaining_seconds(self, *, by_pace: bool = False) -> float | None:
        """Expected seconds until ComfyUI is done with the prompt; None when history knows nothing.
        `by_pace`: only as far as this run's own pace shows (eta.remaining_seconds)."""
        current = self.progress.current_node
        started = self.timeline.started_at(current)
        return eta.remaining_seconds(
            self.estimates,
            to_run=self.progress.to_run,
            done=self.progress.done,
            cached=self.progress.cached,
            current_node=current,
            step_value=self.progress.step_value,
            step_max=self.progress.step_max,
            current_started_seconds_ago=(timezone.now() - started).total_seconds() if started else None,
            by_pace=by_pace,
        )

    def _write_if_due(self, now: float, *, force: bool = False) -> None:
        pending = self.db_dirty or self.dirty or self.timeline.has_pending()
        if pending and (force or now - self.last_db_write >= settings.TRACKER_DB_INTERVAL):
            self.sync_progress_fields()
            # Events reach browsers only once stored, so a client that reconnects with the last
            # seq it saw can always fetch what it missed.
            events = self.timeline.events
            saved = services.job_progress_save(self.job, events, self.timeline.timings)
            if saved is not None:
                self.unsent_events.extend(events)
                self.saved = (now, saved)
            self.timeline.clear_pending()
            self.db_writes += 1
            instruments.progress_written()
            self.last_db_write = now
            self.db_dirty = False

    def _broadcast_if_due(self, now: float, *, force: bool = False) -> None:
        if (self.dirty or self.unsent_events) and (
            force or now - self.last_broadcast >= settings.TRACKER_BROADCAST_INTERVAL
        ):
            self.sync_progress_fields()
            self.job.version = services.next_version(self.job)
            self.db_dirty = True  # the stored version must catch up
            state, to_lists = services.job_broadcast_now(
                self.job, self.unsent_events, shape=self.shape, lists_due=force or self.lists.due(now)
            )
            self.lists.sent(now, state, to_lists=to_lists)
            self.unsent_events = []
            self.broadcasts += 1
            self.last_broadcast = now
            self.dirty = False


def _fit(field: str, value: str) -> str:
    return value[: column_width(Job, field)]
