"""Websocket consumers: thin. Join a group, send a snapshot from the database, relay changes.

Channel-layer delivery is at-most-once, so the snapshot is what a (re)connecting client trusts.
States carry a `version` and timeline events a `seq`: anything not newer than what this socket
already sent is dropped, and a client that reconnects with `?after=<last seq>` first gets the
events it missed, from the database.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.core.cache import cache

from jobs import selectors
from jobs.broadcast import STAFF_GROUP, job_group, user_group
from jobs.models import FINAL_STATUSES
from jobs.serializers import JobEventSerializer, TimelineQuerySerializer, query_problem

logger = logging.getLogger(__name__)

CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_MANY_CONNECTS = 4429
SNAPSHOT_LIMIT = 200
BACKLOG_LIMIT = 5000
QUERY_MAX_FIELDS = 20
CLOSE_REASON_MAX_BYTES = 123  # what a websocket close frame can carry


@database_sync_to_async
def job_snapshot(job_id: str, user: Any, after: int | None) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    job = selectors.visible_jobs(user).filter(pk=job_id).first()
    if job is None:
        return None
    backlog: list[dict[str, Any]] = []
    if after is not None:
        events = job.events.filter(seq__gt=after).order_by("seq")[:BACKLOG_LIMIT]
        backlog = list(JobEventSerializer(events, many=True).data)
    return selectors.job_state(job), backlog


@database_sync_to_async
def visible_jobs_snapshot(user: Any) -> list[dict[str, Any]]:
    jobs = selectors.visible_jobs(user).exclude(status__in=FINAL_STATUSES).order_by("-created_at")[:SNAPSHOT_LIMIT]
    return selectors.job_states(list(jobs))


@database_sync_to_async
def may_see_others_jobs(user: Any) -> bool:
    return selectors.may_see_others_jobs(user)


def timeline_after(scope: dict[str, Any]) -> tuple[int | None, str]:
    """`?after=<seq>` as REST reads it: (the number or None, "") or (None, why it is refused)."""
    raw = scope.get("query_string", b"").decode("utf-8", "replace")
    try:
        query = {name: values[-1] for name, values in parse_qs(raw, max_num_fields=QUERY_MAX_FIELDS).items()}
    except ValueError:
        return None, f"more than {QUERY_MAX_FIELDS} query parameters"
    parsed = TimelineQuerySerializer(data=query)
    if not parsed.is_valid():
        return None, query_problem(parsed.errors)
    return parsed.validated_data.get("after"), ""


async def connect_counted(user_id: int) -> bool:
    """Count a websocket connect of the user's in the current minute (in the shared cache, so
    across every web process); False past WS_CONNECTS_PER_MINUTE."""
    key = f"ws-connects:{user_id}:{int(time.time() // 60)}"
    try:
        await cache.aadd(key, 0, timeout=120)
        count = await cache.aincr(key)
    except ValueError:  # the key expired between the two calls: this is the minute's first
        await cache.aset(key, 1, timeout=120)
        count = 1
    except Exception:  # a cache that is down must not take every live view with it
        logger.warning("websocket connect not counted: the cache is unavailable", exc_info=True)
        return True
    return count <= settings.WS_CONNECTS_PER_MINUTE


class JobSocketConsumer(AsyncJsonWebsocketConsumer):
    """What both job sockets check at the handshake: who connects, and how often."""

    async def admitted_user(self) -> Any | None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return None
        if not await connect_counted(user.pk):
            limit = settings.WS_CONNECTS_PER_MINUTE
            await self.refuse(CLOSE_TOO_MANY_CONNECTS, f"more than {limit} connections a minute; reconnect later")
            return None
        return user

    async def refuse(self, code: int, reason: str) -> None:
        """Accept, then close with a code and reason: a handshake refused before it is accepted
        reaches a browser as a bare HTTP 403, with neither."""
        await self.accept()
        encoded = reason.encode()[:CLOSE_REASON_MAX_BYTES]
        await self.close(code=code, reason=encoded.decode("utf-8", "ignore"))


class JobConsumer(JobSocketConsumer):
    """ws/jobs/<id>/[?after=<seq>]: one job's state and timeline."""

    async def connect(self) -> None:
        user = await self.admitted_user()
        if user is None:
            return
        after, problem = timeline_after(self.scope)
        if problem:
            await self.refuse(CLOSE_BAD_REQUEST, problem)
            return
        job_id = str(self.scope["url_route"]["kwargs"]["job_id"])
        # Join before reading the snapshot, so nothing falls between the two.
        self.group = job_group(job_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        found = await job_snapshot(job_id, user, after)
        if found is None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            await self.close(code=CLOSE_NOT_FOUND)
            return
        state, backlog = found
        await self.accept()
        self.last_version = state["version"]
        self.last_seq = max([state["seq"], after or 0, *(e["seq"] for e in backlog)])
        await self.send_json({"type": "snapshot", "job": state, "events": backlog})

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def job_state(self, event: dict[str, Any]) -> None:
        state = event["job"]
        events = [e for e in event.get("events", []) if e["seq"] > self.last_seq]
        fresh_state = state["version"] >= self.last_version
        if not events and not fresh_state:
            return
        if events:
            self.last_seq = events[-1]["seq"]
        if fresh_state:
            self.last_version = state["version"]
        await self.send_json({"type": "update", "job": state if fresh_state else None, "events": events})


class JobListConsumer(JobSocketConsumer):
    """ws/jobs/: the state of every job the user may see (their own; all for staff who may see
    other users' jobs)."""

    async def connect(self) -> None:
        user = await self.admitted_user()
        if user is None:
            return
        self.last_version: dict[str, int] = {}
        self.group = STAFF_GROUP if await may_see_others_jobs(user) else user_group(user.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        jobs = await visible_jobs_snapshot(user)
        for job in jobs:
            self.last_version[str(job["id"])] = job["version"]
        await self.send_json({"type": "snapshot", "jobs": jobs})

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def job_state(self, event: dict[str, Any]) -> None:
        job = event["job"]
        key = str(job["id"])
        if job["version"] < self.last_version.get(key, -1):
            return
        self.last_version[key] = job["version"]
        await self.send_json({"type": "update", "job": job})
