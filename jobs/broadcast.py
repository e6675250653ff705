"""Fan-out of job state to websocket subscribers over the channel layer.

Delivery through the layer is at-most-once (docs/HAZARDS.md): every message carries the job's `seq`,
and a subscriber always starts from a database snapshot, so a lost message costs nothing lasting.

Sync code (the trackers, the web's views) publishes from its own thread on the pub/sub layer
(jobs.group_publish); on any other layer it sends through one event loop per process, kept in a
daemon thread: the channel layer keeps its Redis connection per event loop, and `async_to_sync`
would make a new loop, thread and connection for every broadcast: 1.7 ms of CPU each, and 7 ms
typical, 33 ms at p99 with 10 jobs tracked (devtools/benchmarks/progress_latency.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

from jobs import instruments
from jobs.group_publish import group_publisher

logger = logging.getLogger(__name__)

BROADCAST_TIMEOUT = 5.0

# While Redis is down every broadcast fails; one warning with its traceback per interval is enough.
FAILURE_LOG_INTERVAL = 30.0
_last_failure_logged = 0.0

STAFF_GROUP = "jobs-staff"


def job_group(job_id: Any) -> str:
    return f"job-{job_id}"


def user_group(user_id: int) -> str:
    return f"jobs-user-{user_id}"


def list_groups(user_id: int | None) -> list[str]:
    """The groups of the job lists (ws/jobs/) that show a job: staff's, and its owner's."""
    return [STAFF_GROUP] if user_id is None else [STAFF_GROUP, user_group(user_id)]


def job_groups(job_id: Any, user_id: int | None) -> list[str]:
    return [job_group(job_id), *list_groups(user_id)]


class ListPacer:
    """How often a running job's progress reaches the job lists: at most once per
    TRACKER_LIST_BROADCAST_INTERVAL, where its own page (ws/jobs/<id>/) gets every broadcast.

    A list shows many jobs at once: every job's every broadcast (~8 a second) was 833 messages a
    second to each staff socket with 100 jobs running, half of the fan-out benchmark's load
    (devtools/benchmarks/fanout.py) and more than a browser's list can draw. Whatever else changes
    (status, errors, outputs, a waiting job's place) still goes to every group at once; the latest
    progress that a list did not get is sent to it alone once the interval is up (`behind`)."""

    def __init__(self) -> None:
        self.last = float("-inf")  # time.monotonic() when the lists were last sent this job's state
        self.behind: dict[str, Any] | None = None  # the latest state the lists have not had

    def due(self, now: float) -> bool:
        return now - self.last >= settings.TRACKER_LIST_BROADCAST_INTERVAL

    def sent(self, now: float, state: dict[str, Any] | None, *, to_lists: bool) -> None:
        """A state was broadcast (`to_lists`: to the lists too); None: the lists were told another way."""
        if to_lists:
            self.last, self.behind = now, None
        else:
            self.behind = state

    def catch_up_at(self) -> float | None:
        """When the lists are due the state they missed; None when they have the latest."""
        return None if self.behind is None else self.last + settings.TRACKER_LIST_BROADCAST_INTERVAL


async def _send_to_groups(groups: list[str], message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    for group in groups:
        await layer.group_send(group, message)


class _LayerLoop:
    """The process's broadcasting event loop, started on first use, and again in a forked child:
    Celery's pool processes inherit the loop object but not its thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0

    def get(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                self._loop, self._pid = asyncio.new_event_loop(), os.getpid()
                threading.Thread(target=self._loop.run_forever, name="channel-layer", daemon=True).start()
            return self._loop


_layer_loop = _LayerLoop()


def job_state_message(state: dict[str, Any], events: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """A job state as the layer carries it: serialized to JSON once, here, with what a subscriber
    filters on beside it (the version, the events' seqs, the status), so the consumers relay the
    text without decoding or encoding it once per socket (jobs/consumers.py)."""
    return {
        "type": "job.state",
        "id": str(state["id"]),
        "version": state["version"],
        "status": state["status"],
        "seqs": [event["seq"] for event in events],
        "state_json": json.dumps(state),
        "events_json": json.dumps(list(events)),
    }


def job_broadcast(
    state: dict[str, Any], user_id: int | None, events: Sequence[dict[str, Any]] = (), *, to_lists: bool = True
) -> None:
    """Send one job state, with the timeline events persisted since the last one, to everyone
    watching it (`to_lists` False: to its own page only, ListPacer). Never raises: the database
    stays the truth."""
    message = job_state_message(state, events)
    groups = job_groups(state["id"], user_id) if to_lists else [job_group(state["id"])]
    groups_broadcast(groups, message, what=f"job {state.get('id')}")


def job_lists_broadcast(state: dict[str, Any], user_id: int | None) -> None:
    """A state the job lists missed (ListPacer.behind), to them alone. Never raises."""
    groups_broadcast(list_groups(user_id), job_state_message(state), what=f"job {state.get('id')} to the lists")


def groups_broadcast(groups: list[str], message: dict[str, Any], *, what: str) -> None:
    """Send one message to channel-layer groups from sync code. Never raises."""
    try:
        publisher = group_publisher()
        if publisher is not None:
            publisher.publish(groups, message)  # the pub/sub layer's sends, from this thread
        else:
            sending = _send_to_groups(groups, message)
            asyncio.run_coroutine_threadsafe(sending, _layer_loop.get()).result(timeout=BROADCAST_TIMEOUT)
        instruments.broadcast_sent(True)
    except Exception:  # a broken layer must not fail a job that ComfyUI is running fine
        instruments.broadcast_sent(False)
        global _last_failure_logged
        now = time.monotonic()
        if now - _last_failure_logged >= FAILURE_LOG_INTERVAL:
            _last_failure_logged = now
            logger.warning(
                "broadcast of %s failed (repeats are not logged for %.0fs)", what, FAILURE_LOG_INTERVAL, exc_info=True
            )
