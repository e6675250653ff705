"""What the job code counts while it works, for whoever measures it.

The job code calls these functions at the moments worth counting (a status change, a tracker's
reconnect, a progress write, a broadcast); they do nothing until a recorder is installed (the
`metrics` app installs its Prometheus one when Django starts). So `jobs` never imports the metrics
library, and a broken recorder never breaks a job: its errors are logged, at most once a minute.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Protocol

logger = logging.getLogger(__name__)

FAILURE_LOG_INTERVAL = 60.0
_last_failure_logged = 0.0


class TransitionedJob(Protocol):
    """What a recorder may read of a job that just changed status (a `jobs.models.Job`)."""

    backend: str
    job_type: str
    attempt: int
    failure_category: str
    created_at: datetime
    not_before: datetime | None
    submitted_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


class Recorder(Protocol):
    def job_transitioned(self, job: TransitionedJob, old: str, new: str) -> None: ...

    def tracker_reconnected(self, reason: str) -> None: ...

    def progress_written(self) -> None: ...

    def broadcast_sent(self, ok: bool) -> None: ...


_recorder: Recorder | None = None


def recorder_install(recorder: Recorder | None) -> None:
    global _recorder
    _recorder = recorder


def _failed() -> None:
    global _last_failure_logged
    now = time.monotonic()
    if now - _last_failure_logged >= FAILURE_LOG_INTERVAL:
        _last_failure_logged = now
        logger.warning(
            "a metrics recorder failed (repeats are not logged for %.0fs)", FAILURE_LOG_INTERVAL, exc_info=True
        )


def job_transitioned(job: TransitionedJob, old: str, new: str) -> None:
    """A job moved from `old` to `new` (called once the move is made, by `jobs.services.job_transition`)."""
    if _recorder is not None:
        try:
            _recorder.job_transitioned(job, old, new)
        except Exception:
            _failed()


def tracker_reconnected(reason: str) -> None:
    """A tracker opened a new ComfyUI websocket: `dropped` (the old one broke) or `silent` (it went quiet)."""
    if _recorder is not None:
        try:
            _recorder.tracker_reconnected(reason)
        except Exception:
            _failed()


def progress_written() -> None:
    """A tracker wrote a job's coalesced progress to the database."""
    if _recorder is not None:
        try:
            _recorder.progress_written()
        except Exception:
            _failed()


def broadcast_sent(ok: bool) -> None:
    """One message went (or failed to go) to the channel layer's groups."""
    if _recorder is not None:
        try:
            _recorder.broadcast_sent(ok)
        except Exception:
            _failed()
