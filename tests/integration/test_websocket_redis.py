"""Websocket subscribers on the real Redis channel layer (tests/unit/test_websocket.py covers the
consumers themselves on the in-memory layer)."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async

from jobs import services
from jobs.models import JobStatus
from tests.factories import JobFactory
from tests.unit.test_websocket import communicator, token_for, with_key

pytestmark = pytest.mark.django_db(transaction=True)


def test_idle_socket_survives_past_the_redis_read_timeout():
    """redis-py's socket timeout once killed idle consumers every ~5 s (docs/HAZARDS.md)."""
    job = JobFactory.create()
    token = token_for(job.user)

    async def scenario():
        ws = communicator(f"/ws/jobs/{job.id}/", with_key(token))
        await ws.connect()
        await ws.receive_json_from(timeout=5)
        await asyncio.sleep(13)
        await database_sync_to_async(services.job_transition)(job, JobStatus.SUBMITTED)
        update = await ws.receive_json_from(timeout=5)
        await ws.disconnect()
        return update

    assert async_to_sync(scenario)()["job"]["status"] == "submitted"
