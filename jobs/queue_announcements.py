"""A backend's queue, announced to the subscribers of all its waiting jobs in one message.

When the queue moves (a job joins, leaves or starts), every waiting job's place and ETA change.
Sending each waiting job its own state cost a send per waiting job (three groups each) and a page
of job rows with their workflows: ~600 sends at 200 waiting, while jobs past the 200th were never
told. Instead one message goes to the backend's queue group: the waiting jobs' queue keys in order
(8 bytes a job, so 10,000 waiting jobs are 80 kB), the waits along the front of the queue, and when
it was read. Each websocket consumer of a waiting job finds its own place in it by a binary search,
and its ETA as the wait at that place plus its own expected run (learned once, when it subscribes).

Reading the queue is three queries whatever its length: the keys, the front's workflows (up to
JOBS_AHEAD_LIMIT, for their expected runs) and the running job's estimate.
"""

from __future__ import annotations

import hashlib
import re
import time
from array import array
from bisect import bisect_left
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.utils import timezone

from jobs import eta
from jobs.models import Job
from jobs.queue_eta import JOBS_AHEAD_LIMIT

MESSAGE_TYPE = "queue.moved"  # JobConsumer.queue_moved / JobListConsumer.queue_moved receive it
# Priority (0-9, higher first), then age: one integer per job, smaller first. Microseconds since
# 1970 stay below 2**53 until the year 2255.
_PRIORITY_STRIDE = 2**53
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_GROUP_NAME = re.compile(r"^[A-Za-z0-9._-]{1,80}$")


def queue_group(backend: str) -> str:
    """The channel-layer group of a backend's waiting jobs' subscribers. Group names allow only a
    few characters; an administrator's backend name outside them is named by its hash."""
    if _GROUP_NAME.match(backend):
        return f"queue.{backend}"
    return f"queue.{hashlib.sha256(backend.encode()).hexdigest()[:32]}"


def queue_key(priority: int, created_at: datetime) -> int:
    """The job's place in its backend's order (as jobs.selectors.queue_key orders): exact integers,
    so jobs equal in priority and age share a place."""
    return (9 - priority) * _PRIORITY_STRIDE + (created_at - _EPOCH) // _MICROSECOND


def job_queue_key(job: Job) -> int:
    return queue_key(job.priority, job.created_at)


def state_queue_key(state: dict[str, Any]) -> int:
    """The same key from a job's state as REST and websockets show it."""
    return queue_key(int(state["priority"]), datetime.fromisoformat(state["created_at"]))


def own_seconds(job: Job) -> float | None:
    """The job's own expected run, learned from history: what its consumer adds to the wait."""
    return eta.expected_total_seconds(job.backend, job.workflow)


def announcement(backend: str) -> dict[str, Any]:
    """The backend's queue as it stands: what `queue_moved` sends."""
    # Imported here: jobs.selectors imports the serializers, which the consumers import too.
    from jobs.selectors import running_remaining_seconds, waiting_jobs

    now = timezone.now()
    rows = waiting_jobs(backend).values_list("priority", "created_at")
    keys = array("q", sorted(queue_key(priority, created_at) for priority, created_at in rows))
    front_rows = waiting_jobs(backend).values_list("id", "workflow")[:JOBS_AHEAD_LIMIT]
    front = [(str(pk), workflow) for pk, workflow in front_rows]
    waits = eta.queue_wait_seconds(backend, front, running_remaining_seconds(backend, now))
    return {
        "type": MESSAGE_TYPE,
        "backend": backend,
        "keys": keys.tobytes(),
        "waits": waits,
        "at": now.timestamp(),
        "version": time.time_ns() // 1000,
    }


@dataclass(frozen=True)
class AnnouncedPlace:
    position: int  # 1-based, as jobs.selectors.queue_positions counts
    wait: float | None  # seconds until it can start, from the announcement's `at`; None when unknown


def place_of(message: dict[str, Any], key: int) -> AnnouncedPlace | None:
    """Where the job with `key` stands in an announcement; None when it is not waiting there."""
    keys = array("q")
    keys.frombytes(message["keys"])
    index = bisect_left(keys, key)
    if index == len(keys) or keys[index] != key:
        return None
    waits = message["waits"]
    return AnnouncedPlace(index + 1, waits[min(index, len(waits) - 1)])


def finish_eta(message: dict[str, Any], place: AnnouncedPlace, own: float | None) -> dict[str, Any] | None:
    """The job's `eta` as JobSerializer shows a waiting job's; None when nothing is known."""
    if place.wait is None or own is None:
        return None
    finish_at = datetime.fromtimestamp(message["at"] + place.wait + own, tz=UTC)
    return {"estimate": True, "finish_at": finish_at.isoformat(), "basis": "node timings, jobs ahead"}


def state_placed(state: dict[str, Any], message: dict[str, Any], key: int, own: float | None) -> dict[str, Any] | None:
    """A waiting job's state moved to its announced place, or None when the announcement does not
    change what its subscribers see. Its `version` is one more than the state's: a client keeps
    only newer states, and the job's next real change is stamped with a later time (services.next_version)."""
    place = place_of(message, key)
    if place is None:
        return None
    told = finish_eta(message, place, own)
    if place.position == state.get("queue_position") and told == state.get("eta"):
        return None
    return {**state, "queue_position": place.position, "eta": told, "version": state["version"] + 1}
