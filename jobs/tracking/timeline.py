"""What the tracker records about a job as it runs: timeline events, node timings, live previews.

Events and timings wait here until the coalescer stores them in one batch.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone

from assets.object_store import STORE_ERRORS
from comfyui import PreviewFrame, WsMessage
from jobs import services
from jobs.models import EventKind, Job, JobEvent, NodeTiming, column_width
from jobs.progress import JobProgress

logger = logging.getLogger(__name__)

NODE_ID_WIDTH = column_width(JobEvent, "node_id")
CLASS_TYPE_WIDTH = column_width(NodeTiming, "class_type")


class Timeline:
    def __init__(self, job: Job, progress: JobProgress, *, prompt_id: str) -> None:
        self.job = job
        self.progress = progress
        self.prompt_id = prompt_id
        self.events: list[JobEvent] = []
        self.timings: list[NodeTiming] = []  # not stored yet
        self.timed: list[NodeTiming] = []  # every node this tracker timed (jobs.eta.history_learn)
        self.node_started_at: dict[str, datetime] = {}
        self.last_step_sample = 0.0
        self.last_preview = 0.0

    def event(self, kind: str, *, node_id: str = "", data: dict | None = None, at: datetime | None = None) -> None:
        # The seq is given when the batch is stored (jobs.services.job_progress_save). Node ids come
        # from ComfyUI's messages too: one longer than the column would stop the whole batch.
        node_id = node_id[:NODE_ID_WIDTH]
        self.events.append(
            JobEvent(job=self.job, seq=0, kind=kind, at=at or timezone.now(), node_id=node_id, data=data or {})
        )

    def has_pending(self) -> bool:
        # A timing is always recorded with its node_finished event.
        return bool(self.events)

    def clear_pending(self) -> None:
        self.events, self.timings = [], []

    def started_at(self, node_id: str | None) -> datetime | None:
        return self.node_started_at.get(node_id) if node_id else None

    def record_happenings(self) -> None:
        now = timezone.now()
        for kind, node_id, data in self.progress.drain_happenings():
            class_type = str(self.job.workflow.get(node_id, {}).get("class_type", ""))
            if kind == "node_started":
                self._node_started(node_id, class_type, now)
            elif kind == "node_finished":
                self._node_finished(node_id, class_type, data, now)
            elif kind == "nodes_cached":
                self.event(EventKind.NODES_CACHED, data=data, at=now)

    def _node_started(self, node_id: str, class_type: str, now: datetime) -> None:
        self.node_started_at[node_id] = now
        name = self.progress.display_names.get(class_type, class_type)
        self.event(EventKind.NODE_STARTED, node_id=node_id, data={"class_type": class_type, "name": name}, at=now)

    def _node_finished(self, node_id: str, class_type: str, data: dict[str, Any], now: datetime) -> None:
        started = self.node_started_at.pop(node_id, None)
        duration = (now - started).total_seconds() if started else None
        self.event(
            EventKind.NODE_FINISHED,
            node_id=node_id,
            data={"class_type": class_type, "seconds": duration, "steps": data.get("steps")},
            at=now,
        )
        if started is not None:
            self._timing(node_id, class_type, started, now, data.get("steps"))

    def _timing(
        self, node_id: str, class_type: str, started: datetime, finished: datetime, steps: float | None
    ) -> None:
        timing = NodeTiming(
            job=self.job,
            attempt=self.job.attempt,
            node_id=node_id[:NODE_ID_WIDTH],
            class_type=class_type[:CLASS_TYPE_WIDTH],
            backend=self.job.backend,
            fingerprint=self.job.fingerprint,
            started_at=started,
            finished_at=finished,
            duration=(finished - started).total_seconds(),
            steps=int(steps) if steps else None,
        )
        self.timings.append(timing)
        self.timed.append(timing)

    def sample_steps(self, message: WsMessage) -> None:
        # Steps arrive ~100 times a second; the timeline keeps a sample now and then.
        if message.type != "progress" or self.progress.step_max is None:
            return
        now = time.monotonic()
        final_step = self.progress.step_value == self.progress.step_max
        if now - self.last_step_sample < settings.TRACKER_STEP_SAMPLE_SECONDS and not final_step:
            return
        self.last_step_sample = now
        self.event(
            EventKind.STEPS,
            node_id=self.progress.current_node or "",
            data={"value": self.progress.step_value, "max": self.progress.step_max},
        )

    def keep_preview(self, frame: PreviewFrame) -> bool:
        """Store the frame as the job's latest preview (at most every TRACKER_PREVIEW_INTERVAL); True if stored."""
        # Type-1 frames name no prompt; on our own client id they can only be ours.
        if frame.prompt_id not in (None, self.prompt_id):
            return False
        now = time.monotonic()
        if now - self.last_preview < settings.TRACKER_PREVIEW_INTERVAL:
            return False
        self.last_preview = now
        try:
            return services.job_preview_store(self.job, frame.image)
        except STORE_ERRORS as exc:
            # A preview is a courtesy: a file store that is down costs the job this frame, nothing more.
            logger.warning("job %s: preview not stored: %s: %s", self.job.id, type(exc).__name__, exc)
            return False
