"""Websocket consumers: thin. Join a group, send a snapshot from the database, relay changes.

Channel-layer delivery is at-most-once, so the snapshot is what a (re)connecting client trusts;
every update carries the job's `seq`, and anything not newer than what was sent is dropped here.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from jobs.broadcast import STAFF_GROUP, job_group, user_group
from jobs.models import FINAL_STATUSES, Job
from jobs.serializers import JobSerializer

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
SNAPSHOT_LIMIT = 200


@database_sync_to_async
def job_snapshot(job_id: str, user: Any) -> dict[str, Any] | None:
    jobs = Job.objects.select_related("user")
    if not user.is_staff:
        jobs = jobs.filter(user=user)
    try:
        job = jobs.filter(pk=job_id).first()
    except Exception:  # a malformed id is simply not a job
        return None
    return JobSerializer(job).data if job else None


@database_sync_to_async
def visible_jobs_snapshot(user: Any) -> list[dict[str, Any]]:
    jobs = Job.objects.select_related("user").exclude(status__in=FINAL_STATUSES)
    if not user.is_staff:
        jobs = jobs.filter(user=user)
    return JobSerializer(jobs.order_by("-created_at")[:SNAPSHOT_LIMIT], many=True).data


class JobConsumer(AsyncJsonWebsocketConsumer):
    """ws/jobs/<id>/: one job."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.job_id = self.scope["url_route"]["kwargs"]["job_id"]
        self.last_seq = -1
        # Join before reading the snapshot, so nothing falls between the two.
        self.group = job_group(self.job_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        snapshot = await job_snapshot(self.job_id, user)
        if snapshot is None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            await self.close(code=CLOSE_NOT_FOUND)
            return
        await self.accept()
        await self._relay(snapshot, kind="snapshot")

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def job_state(self, event: dict[str, Any]) -> None:
        await self._relay(event["job"], kind="update")

    async def _relay(self, job: dict[str, Any], *, kind: str) -> None:
        if job["seq"] <= self.last_seq:
            return
        self.last_seq = job["seq"]
        await self.send_json({"type": kind, "job": job})


class JobListConsumer(AsyncJsonWebsocketConsumer):
    """ws/jobs/: every job the user may see (staff: all)."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.last_seq: dict[str, int] = {}
        self.group = STAFF_GROUP if user.is_staff else user_group(user.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        jobs = await visible_jobs_snapshot(user)
        for job in jobs:
            self.last_seq[str(job["id"])] = job["seq"]
        await self.send_json({"type": "snapshot", "jobs": jobs})

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def job_state(self, event: dict[str, Any]) -> None:
        job = event["job"]
        key = str(job["id"])
        if job["seq"] <= self.last_seq.get(key, -1):
            return
        self.last_seq[key] = job["seq"]
        await self.send_json({"type": "update", "job": job})
