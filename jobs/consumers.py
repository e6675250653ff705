"""Websocket consumers: thin. Join a group, send a snapshot from the database, relay changes.

Channel-layer delivery is at-most-once, so the snapshot is what a (re)connecting client trusts.
States carry a `version` and timeline events a `seq`: anything not newer than what this socket
already sent is dropped, and a client that reconnects with `?after=<last seq>` first gets the
events it missed, from the database.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from jobs import selectors
from jobs.broadcast import STAFF_GROUP, job_group, user_group
from jobs.models import FINAL_STATUSES
from jobs.serializers import JobEventSerializer

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
SNAPSHOT_LIMIT = 200
BACKLOG_LIMIT = 5000


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


def after_param(scope: dict) -> int | None:
    value = parse_qs(scope.get("query_string", b"").decode()).get("after", [None])[0]
    return int(value) if value is not None and value.isdigit() else None


class JobConsumer(AsyncJsonWebsocketConsumer):
    """ws/jobs/<id>/[?after=<seq>]: one job's state and timeline."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        job_id = str(self.scope["url_route"]["kwargs"]["job_id"])
        after = after_param(self.scope)
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


class JobListConsumer(AsyncJsonWebsocketConsumer):
    """ws/jobs/: the state of every job the user may see (staff: all)."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.last_version: dict[str, int] = {}
        self.group = STAFF_GROUP if user.is_staff else user_group(user.pk)
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
