"""Websocket subscribers, through the real ASGI application and Channels' in-memory layer (the
Redis layer's own trap, an idle socket, is in tests/integration/test_websocket_redis.py)."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from anime_production.asgi import application
from jobs import consumers, selectors, services
from jobs.broadcast import job_group, job_state_message
from jobs.models import JobStatus
from tests.factories import JobFactory, UserFactory, api_key_for

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = [(b"origin", b"http://localhost:8000")]


def communicator(path: str, headers=ORIGIN) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, path, headers=headers)


def with_key(key: str) -> list[tuple[bytes, bytes]]:
    """A non-browser client's handshake: the API key in a header (never in the URL)."""
    return [*ORIGIN, (b"x-api-key", key.encode())]


def token_for(user) -> str:
    return api_key_for(user)


def test_subscriber_gets_snapshot_then_updates_in_order():
    job = JobFactory.create()
    token = token_for(job.user)

    async def scenario():
        ws = communicator(f"/ws/jobs/{job.id}/", with_key(token))
        connected, _ = await ws.connect()
        assert connected
        snapshot = await ws.receive_json_from(timeout=5)
        assert snapshot["type"] == "snapshot" and snapshot["job"]["status"] == "queued"
        await database_sync_to_async(services.job_transition)(job, JobStatus.SUBMITTED)
        await database_sync_to_async(services.job_transition)(job, JobStatus.RUNNING)
        first = await ws.receive_json_from(timeout=5)
        second = await ws.receive_json_from(timeout=5)
        await ws.disconnect()
        return snapshot, first, second

    snapshot, first, second = async_to_sync(scenario)()
    assert [first["job"]["status"], second["job"]["status"]] == ["submitted", "running"]
    assert snapshot["job"]["version"] < first["job"]["version"] < second["job"]["version"]
    # Each status change is on the timeline, in order, and reaches the subscriber with it.
    kinds = [(e["kind"], e["data"]["to"]) for e in first["events"] + second["events"]]
    assert kinds == [("status", "submitted"), ("status", "running")]
    assert first["events"][0]["seq"] < second["events"][0]["seq"]


def test_a_state_broadcast_while_the_snapshot_is_read_reaches_the_subscriber_after_it(monkeypatch):
    # The socket joins the job's group, then reads its snapshot; the job ends in between (its last
    # state committed after the read, broadcast before the read returns). Relayed at once, that state
    # met a socket with no state yet and was dropped: the viewer never saw the job end.
    job = JobFactory.create()
    token = token_for(job.user)
    as_read = selectors.job_state(job)
    ended = dict(as_read, status="completed", version=as_read["version"] + 1)

    async def snapshot_read_while_the_job_ends(user, job_id, after):
        await get_channel_layer().group_send(job_group(job.id), job_state_message(ended))
        await asyncio.sleep(0.1)  # the hub hands it to the socket's mailbox meanwhile
        return True, (as_read, [], None)

    monkeypatch.setattr(consumers, "job_handshake", snapshot_read_while_the_job_ends)

    async def scenario():
        ws = communicator(f"/ws/jobs/{job.id}/", with_key(token))
        connected, _ = await ws.connect()
        assert connected
        snapshot = await ws.receive_json_from(timeout=5)
        update = await ws.receive_json_from(timeout=5)
        await ws.disconnect()
        return snapshot, update

    snapshot, update = async_to_sync(scenario)()
    assert snapshot["job"]["status"] == "queued"
    assert update["job"]["status"] == "completed" and update["job"]["version"] == ended["version"]


def test_stale_update_is_not_relayed_after_a_newer_snapshot():
    job = JobFactory.create()
    services.job_transition(job, JobStatus.SUBMITTED)
    token = token_for(job.user)

    async def scenario():
        ws = communicator(f"/ws/jobs/{job.id}/", with_key(token))
        await ws.connect()
        snapshot = await ws.receive_json_from(timeout=5)
        stale = dict(snapshot["job"], status="queued", version=snapshot["job"]["version"] - 1)
        # As if a delayed broadcast arrived after the snapshot.
        await get_channel_layer().group_send(job_group(job.id), job_state_message(stale))
        nothing = await ws.receive_nothing(timeout=0.3)
        await ws.disconnect()
        return nothing

    assert async_to_sync(scenario)()


def test_session_cookie_authenticates_too(client):
    job = JobFactory.create()
    client.force_login(job.user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()

    async def scenario():
        ws = communicator(f"/ws/jobs/{job.id}/", headers=[*ORIGIN, (b"cookie", cookie)])
        connected, _ = await ws.connect()
        message = await ws.receive_json_from(timeout=5) if connected else None
        await ws.disconnect()
        return connected, message

    connected, message = async_to_sync(scenario)()
    assert connected and message["job"]["id"] == str(job.id)


@pytest.mark.parametrize("case", ["anonymous", "bad-token", "someone-elses-job", "foreign-origin"])
def test_refused_subscriptions(case):
    job = JobFactory.create()
    stranger = UserFactory.create()
    path, headers = f"/ws/jobs/{job.id}/", with_key(token_for(job.user))
    if case == "anonymous":
        headers = ORIGIN
    elif case == "bad-token":
        headers = with_key("ap_nope")
    elif case == "someone-elses-job":
        headers = with_key(token_for(stranger))
    elif case == "foreign-origin":
        headers = [(b"origin", b"http://evil.example"), (b"x-api-key", token_for(job.user).encode())]

    async def scenario():
        ws = communicator(path, headers=headers)
        connected, _ = await ws.connect()
        await ws.disconnect()
        return connected

    assert async_to_sync(scenario)() is False


def test_job_list_stream_shows_only_the_users_jobs():
    user = UserFactory.create()
    theirs = JobFactory.create()
    mine = JobFactory.create(user=user)
    token = token_for(user)

    async def scenario():
        ws = communicator("/ws/jobs/", with_key(token))
        await ws.connect()
        snapshot = await ws.receive_json_from(timeout=5)
        await database_sync_to_async(services.job_transition)(theirs, JobStatus.SUBMITTED)
        await database_sync_to_async(services.queue_announce)()  # the default worker announces the move
        await database_sync_to_async(services.job_transition)(mine, JobStatus.SUBMITTED)
        updates = [await ws.receive_json_from(timeout=5)]
        while updates[-1]["job"]["status"] != "submitted":
            updates.append(await ws.receive_json_from(timeout=5))
        more = await ws.receive_nothing(timeout=0.3)
        await ws.disconnect()
        return snapshot, updates, more

    snapshot, updates, more = async_to_sync(scenario)()
    assert [(j["id"], j["queue_position"]) for j in snapshot["jobs"]] == [(str(mine.id), 2)]
    assert {u["job"]["id"] for u in updates} == {str(mine.id)}, "another user's job leaked into the stream"
    # When the other job left the queue, mine moved up: the stream said so.
    assert [u["job"]["queue_position"] for u in updates] == [1, None]
    assert more
