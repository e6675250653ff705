"""Websocket consumers: thin. Join a group, send a snapshot from the database, relay changes.

Channel-layer delivery is at-most-once, so the snapshot is what a (re)connecting client trusts.
States carry a `version` and timeline events a `seq`: anything not newer than what this socket
already sent is dropped, and a client that reconnects with `?after=<last seq>` first gets the
events it missed, from the database.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection

from access.kept_connections import thread_started
from access.redis_cache import cache_incr_expiring
from jobs import selectors
from jobs.broadcast import STAFF_GROUP, job_group, user_group
from jobs.fanout_hub import CLOSE_TOO_SLOW, Mailbox, process_hub
from jobs.live_state import live_event_payloads
from jobs.models import FINAL_STATUSES, Job, JobStatus
from jobs.queue_announcements import FLEET_QUEUE_GROUP, own_seconds, state_placed, state_queue_key
from jobs.queue_announcements import MESSAGE_TYPE as QUEUE_MOVED
from jobs.serializers import TimelineQuerySerializer, query_problem

logger = logging.getLogger(__name__)

CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_MANY_CONNECTS = 4429
SNAPSHOT_LIMIT = 200
BACKLOG_LIMIT = 5000
QUERY_MAX_FIELDS = 20
CLOSE_REASON_MAX_BYTES = 123  # what a websocket close frame can carry
# A socket that hears only through this process's hub (jobs.fanout_hub) needs no channel of its own
# in the channel layer (Channels makes one per socket unless its layer alias names no layer: with
# channels-redis, a SUBSCRIBE and an UNSUBSCRIBE in Redis per socket).
HUB_ONLY = "no channel layer: the fan-out hub"

# The handshake's database and cache work (who connects, how often, the snapshot) runs on a few
# threads of its own, each with its own database connection: not on the one thread that every
# thread-sensitive call of the process shares (Django's sync views included), where a storm of
# 2,000 connects queued behind each other; and never on more than this many connections.
HANDSHAKE_THREADS = 8
_handshake_pool = ThreadPoolExecutor(
    max_workers=HANDSHAKE_THREADS, thread_name_prefix="ws-handshake", initializer=thread_started
)


# A handshake thread's connection that answered this recently is not asked `SELECT 1` first (Django's
# health check before each call: in a storm, a round trip per handshake, 40 % of its time). A
# connection that died meanwhile (PostgreSQL restarted) fails the call, which then runs once more on
# a new connection: no handshake fails for it.
HEALTH_CHECK_AFTER_IDLE_SECONDS = 1.0


class _HandshakeThread(threading.local):
    answered_at = float("-inf")


_thread = _HandshakeThread()


def handshake_sync_to_async(function: Callable[..., Any]) -> Callable[..., Any]:
    """database_sync_to_async on the handshake threads: stale connections closed before and after,
    the health check only on a connection idle for a while, a call that met a dead connection run
    again on a new one (it only reads; its connect count, if it made one, counts twice)."""

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        close_old_connections()
        try:
            return _on_a_live_connection(function, *args, **kwargs)
        finally:
            close_old_connections()

    return sync_to_async(call, thread_sensitive=False, executor=_handshake_pool)


def _on_a_live_connection(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    checked = time.monotonic() - _thread.answered_at >= HEALTH_CHECK_AFTER_IDLE_SECONDS
    if not checked:
        connection.health_check_done = True  # type: ignore[attr-defined]  # Django's own flag
    try:
        result = function(*args, **kwargs)
    except DatabaseError:
        _thread.answered_at = float("-inf")
        if checked or connection.is_usable():
            raise
        logger.info("handshake thread's database connection was gone: handshake run again on a new one")
        connection.close()
        result = function(*args, **kwargs)
    _thread.answered_at = time.monotonic()
    return result


Snapshot = tuple[dict[str, Any], list[dict[str, Any]], float | None]


def job_snapshot(job_id: str, user: Any, after: int | None) -> Snapshot | None:
    """The job's state, the events after `after`, and its own expected run (for its ETA in the queue)."""
    job = selectors.visible_jobs(user).filter(pk=job_id).first()
    if job is None:
        return None
    backlog: list[dict[str, Any]] = []
    if after is not None:
        events = job.events.filter(seq__gt=after).order_by("seq")[:BACKLOG_LIMIT]
        backlog = live_event_payloads(events)
    own = own_seconds(job) if job.status == JobStatus.QUEUED else None
    return selectors.job_state(job), backlog, own


@handshake_sync_to_async
def job_handshake(user: Any, job_id: str, after: int | None) -> tuple[bool, Snapshot | None]:
    """A job socket's handshake in one trip to a handshake thread: (counted under the user's
    limit, the snapshot) or (False, None) past the limit."""
    if not connect_counted(user.pk):
        return False, None
    return True, job_snapshot(job_id, user, after)


@database_sync_to_async
def jobs_own_seconds(job_ids: list[str]) -> dict[str, float | None]:
    """Each waiting job's own expected run: one query for their workflows, estimates from history."""
    jobs = Job.objects.filter(pk__in=job_ids).only("id", "backend", "requested_backend", "workflow")
    return {str(job.pk): own_seconds(job) for job in jobs}


@handshake_sync_to_async
def visible_jobs_snapshot(user: Any) -> list[dict[str, Any]]:
    jobs = selectors.visible_jobs(user).exclude(status__in=FINAL_STATUSES).order_by("-created_at")[:SNAPSHOT_LIMIT]
    return selectors.job_states(list(jobs))


@handshake_sync_to_async
def list_handshake(user: Any) -> tuple[bool, bool]:
    """A list socket's first trip to a handshake thread: (counted under the user's limit, whether
    the user may see other users' jobs)."""
    if not connect_counted(user.pk):
        return False, False
    return True, selectors.may_see_others_jobs(user)


def timeline_after(scope: dict[str, Any]) -> tuple[int | None, str]:
    """`?after=<seq>` as REST reads it: (the number or None, "") or (None, why it is refused)."""
    raw = scope.get("query_string", b"").decode("utf-8", "replace")
    try:
        query = {name: values[-1] for name, values in parse_qs(raw, max_num_fields=QUERY_MAX_FIELDS).items()}
    except ValueError:
        return None, f"more than {QUERY_MAX_FIELDS} query parameters"
    if "after" not in query:
        # Most sockets: nothing to check. A serializer's validation of no parameters took 84 µs of the
        # event loop's thread (its fields are made anew each time): 0.17 s of a 2,000-connect storm.
        return None, ""
    parsed = TimelineQuerySerializer(data=query)
    if not parsed.is_valid():
        return None, query_problem(parsed.errors)
    return parsed.validated_data.get("after"), ""


def connect_counted(user_id: int) -> bool:
    """Count a websocket connect of the user's in the current minute (in the shared cache, so
    across every web process); False past WS_CONNECTS_PER_MINUTE. Synchronous, on a handshake
    thread: the cache's async methods would take two hops to the process's shared thread."""
    try:
        count = cache_incr_expiring(f"ws-connects:{user_id}:{int(time.time() // 60)}", 120)
    except Exception:  # a cache that is down must not take every live view with it
        logger.warning("websocket connect not counted: the cache is unavailable", exc_info=True)
        return True
    return bool(count <= settings.WS_CONNECTS_PER_MINUTE)


_connect_counted_on_thread = handshake_sync_to_async(connect_counted)


def update_text(event: dict[str, Any], *, with_events: bool) -> str:
    """The update a socket sends, made from the JSON the broadcast serialized once
    (jobs.broadcast.job_state_message): the same text as json.dumps of {"type": "update", "job": state}
    (and "events"), without decoding the state or encoding it again for every socket."""
    if with_events:
        return f'{{"type": "update", "job": {event["state_json"]}, "events": {event["events_json"]}}}'
    return f'{{"type": "update", "job": {event["state_json"]}}}'


class JobSocketConsumer(AsyncJsonWebsocketConsumer):
    """What both job sockets check at the handshake: who connects, and how often.

    No database work runs on the event loop's thread here (it runs on the handshake threads, which
    close their own connections), so the socket's messages skip what Channels does around each:
    a trip to the process's shared sync thread to close old connections, at every connect and
    disconnect of every socket (a storm's 2,000 connects queued there)."""

    async def dispatch(self, message: dict[str, Any]) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        await self.disconnect(message["code"])
        raise StopConsumer()

    async def authenticated_user(self) -> Any | None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return None
        return user

    async def admitted_user(self) -> Any | None:
        """Authenticated and counted, for a socket whose handshake has nothing else to read."""
        user = await self.authenticated_user()
        if user is not None and not await _connect_counted_on_thread(user.pk):
            await self.refuse_too_many()
            return None
        return user

    async def refuse_too_many(self) -> None:
        """Past the user's connects a minute (counted in connect_counted, on the handshake thread)."""
        await self.unfollow_all()
        limit = settings.WS_CONNECTS_PER_MINUTE
        await self.refuse(CLOSE_TOO_MANY_CONNECTS, f"more than {limit} connections a minute; reconnect later")

    # --- the groups it follows, through this process's hub (jobs.fanout_hub) ---------------------

    async def follow(self, group: str) -> None:
        if getattr(self, "mailbox", None) is None:
            # Held until the socket's snapshot is sent (jobs.fanout_hub): `snapshot_sent`.
            self.mailbox = Mailbox(self.hub_message, self.too_slow, held=True)
            self.following: set[str] = set()
        self.following.add(group)
        await process_hub().join(group, self.mailbox)

    def snapshot_sent(self) -> None:
        """The groups' messages that waited for the snapshot, then the rest, are relayed from now on."""
        self.mailbox.release()

    async def unfollow(self, group: str) -> None:
        if group in getattr(self, "following", ()):
            self.following.discard(group)
            await process_hub().leave(group, self.mailbox)

    async def unfollow_all(self) -> None:
        for group in list(getattr(self, "following", ())):
            await self.unfollow(group)
        if getattr(self, "mailbox", None) is not None:
            self.mailbox.close()

    async def hub_message(self, message: dict[str, Any]) -> None:
        """A group's message, from this socket's mailbox: a job state relayed with no thread hop and
        no decoding (the relay never touches the database), or the queue's move."""
        if message["type"] == "job.state":
            await self.job_state(message)
        elif message["type"] == QUEUE_MOVED:
            await self.queue_moved(message)

    async def too_slow(self) -> None:
        """The client stopped reading: it reconnects and catches up from the database."""
        await self.close(code=CLOSE_TOO_SLOW)

    async def job_state(self, event: dict[str, Any]) -> None:
        """Each socket relays a job state its own way (one job's timeline, or a list of jobs)."""
        raise NotImplementedError

    async def refuse(self, code: int, reason: str) -> None:
        """Accept, then close with a code and reason: a handshake refused before it is accepted
        reaches a browser as a bare HTTP 403, with neither."""
        await self.accept()
        encoded = reason.encode()[:CLOSE_REASON_MAX_BYTES]
        await self.close(code=code, reason=encoded.decode("utf-8", "ignore"))


class JobConsumer(JobSocketConsumer):
    """ws/jobs/<id>/[?after=<seq>]: one job's state and timeline."""

    channel_layer_alias = HUB_ONLY

    async def connect(self) -> None:
        user = await self.authenticated_user()
        if user is None:
            return
        after, problem = timeline_after(self.scope)
        if problem:
            await self.refuse(CLOSE_BAD_REQUEST, problem)
            return
        job_id = str(self.scope["url_route"]["kwargs"]["job_id"])
        # Join before reading the snapshot, so nothing falls between the two.
        await self.follow(job_group(job_id))
        admitted, found = await job_handshake(user, job_id, after)
        if not admitted:
            await self.refuse_too_many()
            return
        if found is None:
            await self.unfollow_all()
            await self.close(code=CLOSE_NOT_FOUND)
            return
        state, backlog, self.own_seconds = found
        await self.accept()
        self.state = state
        self.last_version = state["version"]
        self.last_seq = max([state["seq"], after or 0, *(e["seq"] for e in backlog)])
        await self.send_json({"type": "snapshot", "job": state, "events": backlog})
        self.snapshot_sent()
        await self._follow_queue()

    async def disconnect(self, code: int) -> None:
        await self.unfollow_all()

    async def job_state(self, event: dict[str, Any]) -> None:
        """The broadcast's own text when all of it is new to this socket (nearly always); decoded and
        filtered only when some of it was already sent (a snapshot read after it, a resent event)."""
        fresh_state = event["version"] >= self.last_version
        fresh_seqs = [seq for seq in event["seqs"] if seq > self.last_seq]
        if not fresh_seqs and not fresh_state:
            return
        if fresh_state and len(fresh_seqs) == len(event["seqs"]):
            text = update_text(event, with_events=True)
        else:
            events = [e for e in json.loads(event["events_json"]) if e["seq"] > self.last_seq]
            state = json.loads(event["state_json"]) if fresh_state else None
            text = json.dumps({"type": "update", "job": state, "events": events})
        if fresh_seqs:
            self.last_seq = fresh_seqs[-1]
        if fresh_state:
            self.last_version = event["version"]
            # Queue moves read the state only while the job waits: progress is not decoded.
            if event["status"] == JobStatus.QUEUED or event["status"] != self.state["status"]:
                self.state = json.loads(event["state_json"])
        await self.send(text_data=text)
        if fresh_state:
            await self._follow_queue()

    async def queue_moved(self, event: dict[str, Any]) -> None:
        """The fleet's queue moved (jobs.queue_announcements): this job's new place and ETA."""
        if self.state["status"] != JobStatus.QUEUED:
            return
        placed = state_placed(self.state, event, state_queue_key(self.state), self.own_seconds)
        if placed is None or placed["version"] < self.last_version:
            return
        self.state, self.last_version = placed, placed["version"]
        await self.send_json({"type": "update", "job": placed, "events": []})

    async def _follow_queue(self) -> None:
        """In the fleet's queue group while the job waits, and only then."""
        waiting = self.state["status"] == JobStatus.QUEUED
        if waiting == (FLEET_QUEUE_GROUP in self.following):
            return
        if not waiting:
            await self.unfollow(FLEET_QUEUE_GROUP)
            return
        if self.own_seconds is None:  # back in the queue (a retry): its own run is learned now
            self.own_seconds = (await jobs_own_seconds([str(self.state["id"])])).get(str(self.state["id"]))
        await self.follow(FLEET_QUEUE_GROUP)


class JobListConsumer(JobSocketConsumer):
    """ws/jobs/: the state of every job the user may see (their own; all for staff who may see
    other users' jobs)."""

    channel_layer_alias = HUB_ONLY

    async def connect(self) -> None:
        user = await self.authenticated_user()
        if user is None:
            return
        admitted, sees_all = await list_handshake(user)
        if not admitted:
            await self.refuse_too_many()
            return
        self.last_version: dict[str, int] = {}
        # The waiting jobs it shows, with their own expected runs once learned: queue
        # announcements move them (jobs.queue_announcements).
        self.waiting: dict[str, dict[str, Any]] = {}
        self.own: dict[str, float | None] = {}
        for group in [STAFF_GROUP if sees_all else user_group(user.pk), FLEET_QUEUE_GROUP]:
            await self.follow(group)
        await self.accept()
        jobs = await visible_jobs_snapshot(user)
        for job in jobs:
            self._hold(job)
        await self.send_json({"type": "snapshot", "jobs": jobs})
        self.snapshot_sent()

    async def disconnect(self, code: int) -> None:
        await self.unfollow_all()

    async def job_state(self, event: dict[str, Any]) -> None:
        key = event["id"]
        if event["version"] < self.last_version.get(key, -1):
            return
        if event["status"] == JobStatus.QUEUED:
            self._hold(json.loads(event["state_json"]))  # queue moves re-place a waiting job's state
        else:
            self._hold({"id": key, "version": event["version"], "status": event["status"]})
        await self.send(text_data=update_text(event, with_events=False))

    async def queue_moved(self, event: dict[str, Any]) -> None:
        """The fleet's queue moved: the new places and ETAs of the waiting jobs shown here."""
        shown = dict(self.waiting)
        unknown = [key for key in shown if key not in self.own]
        if unknown:
            self.own.update(await jobs_own_seconds(unknown))
        for key, state in shown.items():
            placed = state_placed(state, event, state_queue_key(state), self.own.get(key))
            if placed is not None and placed["version"] >= self.last_version.get(key, -1):
                self._hold(placed)
                await self.send_json({"type": "update", "job": placed})

    def _hold(self, job: dict[str, Any]) -> None:
        key = str(job["id"])
        self.last_version[key] = job["version"]
        if job["status"] == JobStatus.QUEUED:
            self.waiting[key] = job
        else:
            self.waiting.pop(key, None)
            self.own.pop(key, None)
