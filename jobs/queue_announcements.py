"""The fleet's queue, announced to the subscribers of all waiting jobs in one message.

Waiting jobs are bound to no backend (jobs.dispatch): the fleet has one queue, in the order the
backends take from it (priority, fair-share turn, age). When it moves (a job joins, leaves or
starts), every waiting job's place and ETA change. One message goes to the fleet's queue group:
the waiting jobs' keys (8 bytes of each job's id) sorted, with each one's place beside it (12 bytes a
job, so 10,000 waiting jobs are 120 kB), the waits along the front of the queue, and when it was
read. Each websocket consumer of a waiting job finds its own place by a binary search, and its ETA as
the wait at that place plus its own expected run (learned once, when it subscribes).

The wait at a place is the work ahead of it (the running jobs' remaining time and the front's
expected runs) shared by the backends in service: an estimate, labelled as one. A job that only
some backends can run may wait longer than its place says.

Reading the queue is four queries whatever its length: the ids in order, the front's workflows (up
to JOBS_AHEAD_LIMIT, for their expected runs), the running jobs' estimates and the backends.
"""

from __future__ import annotations

import time
import uuid
from array import array
from bisect import bisect_left
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.utils import timezone

from jobs import eta
from jobs.facts_served import facts_served
from jobs.models import ACTIVE_STATUSES, Job
from jobs.queue_eta import JOBS_AHEAD_LIMIT
from jobs.queue_order import index_order_kept, waiting_in_order

MESSAGE_TYPE = "queue.moved"  # JobConsumer.queue_moved / JobListConsumer.queue_moved receive it
FLEET_QUEUE_GROUP = "queue.fleet"  # the channel-layer group of every waiting job's subscribers


def job_key(job_id: Any) -> int:
    """A waiting job's key in an announcement: the first 8 bytes of its id, as a signed integer."""
    raw = job_id.bytes if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id)).bytes
    return int.from_bytes(raw[:8], "big", signed=True)


def state_queue_key(state: dict[str, Any]) -> int:
    """The same key from a job's state as REST and websockets show it."""
    return job_key(state["id"])


def own_seconds(job: Job) -> float | None:
    """The job's own expected run, learned from history: what its consumer adds to the wait."""
    return eta.expected_total_seconds(job.estimate_backend, job.workflow)


def fleet_waits(front: list[tuple[str, dict[str, Any]]], now: datetime) -> list[float | None]:
    """The wait at each place along the front: the work ahead shared by the backends in service."""
    in_service = max(sum(1 for facts in facts_served() if facts.in_service), 1)
    finishes = list(Job.objects.filter(status__in=ACTIVE_STATUSES).values_list("eta_finish_at", flat=True))
    running: float | None = 0.0
    for finish_at in finishes:
        running = (
            None if running is None or finish_at is None else running + max((finish_at - now).total_seconds(), 0.0)
        )
    # Only the jobs beyond the free backends wait for a running one to end.
    free = max(in_service - len(finishes), 0)
    work = eta.queue_wait_seconds(settings.COMFYUI_DEFAULT_BACKEND, front, running)
    waits: list[float | None] = []
    for index, total in enumerate(work):
        if index < free:
            waits.append(0.0)
        else:
            waits.append(None if total is None else total / in_service)
    return waits


def announcement() -> dict[str, Any]:
    """The fleet's queue as it stands: what `queue_moved` sends."""
    now = timezone.now()
    with index_order_kept():
        ids = list(waiting_in_order().values_list("id", flat=True))
        front_rows = waiting_in_order().values_list("id", "workflow")[:JOBS_AHEAD_LIMIT]
        front = [(str(pk), workflow) for pk, workflow in front_rows]
    placed = sorted((job_key(pk), place) for place, pk in enumerate(ids, start=1))
    keys = array("q", [key for key, _ in placed])
    places = array("i", [place for _, place in placed])
    return {
        "type": MESSAGE_TYPE,
        "keys": keys.tobytes(),
        "places": places.tobytes(),
        "waits": fleet_waits(front, now),
        "at": now.timestamp(),
        "version": time.time_ns() // 1000,
    }


@dataclass(frozen=True)
class AnnouncedPlace:
    position: int  # 1-based, in the fleet's order
    wait: float | None  # seconds until it can start, from the announcement's `at`; None when unknown


def place_of(message: dict[str, Any], key: int) -> AnnouncedPlace | None:
    """Where the job with `key` stands in an announcement; None when it is not waiting there."""
    keys = array("q")
    keys.frombytes(message["keys"])
    index = bisect_left(keys, key)
    if index == len(keys) or keys[index] != key:
        return None
    places = array("i")
    places.frombytes(message["places"])
    position = places[index]
    waits = message["waits"]
    return AnnouncedPlace(position, waits[min(position - 1, len(waits) - 1)])


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
