"""The thin relay (jobs.broadcast.job_state_message, jobs/consumers.py): a job state is serialized once
per broadcast and reaches every socket as the same text the consumers used to make per socket, with
the same version and seq rules; relaying it touches no database; connect storms are admitted."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import channels.consumer
import channels.generic.websocket
import msgpack  # type: ignore[import-untyped]
import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from jobs import broadcast, consumers, selectors
from jobs.broadcast import STAFF_GROUP, job_group, job_state_message
from tests.factories import JobFactory, UserFactory, api_key_for
from tests.unit.test_websocket import communicator, with_key

pytestmark = pytest.mark.django_db(transaction=True)


def event(seq: int) -> dict[str, Any]:
    return {"seq": seq, "kind": "progress", "at": "2026-12-05T02:00:00Z", "data": {"step": seq}}


async def send(group: str, state: dict[str, Any], events: list[dict[str, Any]]) -> None:
    await get_channel_layer().group_send(group, job_state_message(state, events))


def test_a_job_socket_gets_the_update_as_json_dumps_would_make_it():
    job = JobFactory.create()
    key = api_key_for(job.user)  # type: ignore[arg-type]
    state = selectors.job_state(job)

    async def scenario() -> str:
        ws = communicator(f"/ws/jobs/{job.id}/", with_key(key))
        await ws.connect()
        await ws.receive_json_from(timeout=5)
        newer = dict(state, version=state["version"] + 1, progress=0.5)
        await send(job_group(job.id), newer, [event(state["seq"] + 1)])
        text = await ws.receive_from(timeout=5)
        await ws.disconnect()
        return text

    text = async_to_sync(scenario)()
    newer = dict(state, version=state["version"] + 1, progress=0.5)
    assert text == json.dumps({"type": "update", "job": newer, "events": [event(state["seq"] + 1)]})


def test_events_already_sent_are_dropped_and_a_stale_state_is_not_resent():
    job = JobFactory.create()
    key = api_key_for(job.user)  # type: ignore[arg-type]
    state = selectors.job_state(job)
    seq, version = state["seq"], state["version"]

    async def scenario() -> list[dict[str, Any]]:
        ws = communicator(f"/ws/jobs/{job.id}/", with_key(key))
        await ws.connect()
        await ws.receive_json_from(timeout=5)
        await send(job_group(job.id), dict(state, version=version + 2), [event(seq + 1), event(seq + 2)])
        # Delayed: an older state with one event already sent and one new.
        await send(job_group(job.id), dict(state, version=version + 1), [event(seq + 2), event(seq + 3)])
        # Nothing new at all: not sent.
        await send(job_group(job.id), dict(state, version=version + 1), [event(seq + 3)])
        received = [await ws.receive_json_from(timeout=5), await ws.receive_json_from(timeout=5)]
        assert await ws.receive_nothing(timeout=0.3)
        await ws.disconnect()
        return received

    first, second = async_to_sync(scenario)()
    assert first["job"]["version"] == version + 2 and [e["seq"] for e in first["events"]] == [seq + 1, seq + 2]
    assert second == {"type": "update", "job": None, "events": [event(seq + 3)]}


def test_a_staff_list_socket_gets_every_job_and_drops_older_versions():
    staff = UserFactory.create(is_staff=True, is_superuser=True)
    key = api_key_for(staff)
    job = JobFactory.create()
    state = selectors.job_state(job)

    async def scenario() -> list[str]:
        ws = communicator("/ws/jobs/", with_key(key))
        await ws.connect()
        await ws.receive_json_from(timeout=5)
        running = dict(state, status="running", version=state["version"] + 2)
        await send(STAFF_GROUP, running, [event(1)])
        await send(STAFF_GROUP, dict(state, status="submitted", version=state["version"] + 1), [])
        texts = [await ws.receive_from(timeout=5)]
        assert await ws.receive_nothing(timeout=0.3)
        await ws.disconnect()
        return texts

    (text,) = async_to_sync(scenario)()
    assert text == json.dumps({"type": "update", "job": dict(state, status="running", version=state["version"] + 2)})


def test_a_socket_s_connect_relays_and_disconnect_make_no_trip_to_the_shared_thread(monkeypatch):
    """Channels closes stale database connections through a hop to the process's shared sync thread
    around each handler, connect and disconnect included; the job sockets do no database work on the
    event loop's thread and skip it (docs/HAZARDS.md: 400-800 relayed messages/s per process with it;
    a connect storm queued there)."""
    job = JobFactory.create()
    key = api_key_for(job.user)  # type: ignore[arg-type]
    state = selectors.job_state(job)
    hops: list[str] = []

    async def counted() -> None:
        hops.append("close_old_connections")

    for module in (channels.consumer, channels.generic.websocket):
        assert hasattr(module, "aclose_old_connections"), "where Channels makes the hop"
        monkeypatch.setattr(module, "aclose_old_connections", counted)

    async def scenario() -> int:
        ws = communicator(f"/ws/jobs/{job.id}/", with_key(key))
        await ws.connect()
        await ws.receive_json_from(timeout=5)
        for step in range(1, 11):
            await send(job_group(job.id), dict(state, version=state["version"] + step), [])
        received = 0
        for _ in range(10):
            await ws.receive_from(timeout=5)
            received += 1
        await ws.disconnect()
        return received

    assert async_to_sync(scenario)() == 10
    assert hops == []


def test_a_connect_storm_is_admitted_on_the_bounded_handshake_threads(monkeypatch):
    jobs = [JobFactory.create() for _ in range(5)]
    keys = {job.id: api_key_for(job.user) for job in jobs}  # type: ignore[arg-type]
    threads: set[str] = set()
    real_state = selectors.job_state

    def recording_state(job: Any) -> dict[str, Any]:
        threads.add(threading.current_thread().name)
        return real_state(job)

    monkeypatch.setattr(selectors, "job_state", recording_state)

    async def one(job: Any) -> bool:
        ws = communicator(f"/ws/jobs/{job.id}/", with_key(keys[job.id]))
        connected, _ = await ws.connect(timeout=10)
        snapshot = await ws.receive_json_from(timeout=10) if connected else None
        await ws.disconnect()
        return bool(snapshot and snapshot["type"] == "snapshot")

    async def storm() -> list[bool]:
        return list(await asyncio.gather(*(one(jobs[i % len(jobs)]) for i in range(40))))

    assert all(async_to_sync(storm)())
    assert threads and all(name.startswith("ws-handshake") for name in threads)
    assert len(threads) <= consumers.HANDSHAKE_THREADS


def test_a_refused_key_does_not_fall_back_to_the_session(client):
    job = JobFactory.create()
    client.force_login(job.user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    headers = [*with_key("ap_000000000000_nope"), (b"cookie", cookie)]

    async def scenario() -> bool:
        ws = communicator(f"/ws/jobs/{job.id}/", headers=headers)
        connected, _ = await ws.connect()
        await ws.disconnect()
        return connected

    assert async_to_sync(scenario)() is False


def test_the_layer_message_is_plain_msgpack_and_the_state_round_trips():
    job = JobFactory.create()
    state = selectors.job_state(job)
    message = job_state_message(state, [event(1)])
    assert msgpack.unpackb(msgpack.packb(message)) == message
    assert json.loads(message["state_json"]) == state and message["seqs"] == [1]
    assert broadcast.job_groups(job.id, job.user_id)[0] == job_group(job.id)
