"""The web process's fan-out hub (jobs.fanout_hub): a group is subscribed once per process whatever
its sockets, each socket gets every message in order, and a socket whose client stopped reading is
closed (it reconnects and catches up) instead of holding the others back or growing without end."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from jobs import services
from jobs.broadcast import job_group
from jobs.fanout_hub import MAILBOX_LIMIT, Mailbox
from jobs.models import JobStatus
from tests.factories import JobFactory
from tests.unit.test_websocket import communicator, token_for, with_key

pytestmark = pytest.mark.django_db(transaction=True)


def test_three_sockets_of_one_job_are_one_subscription_and_each_hears_every_update():
    job = JobFactory.create()
    token = token_for(job.user)
    layer = get_channel_layer()

    async def scenario() -> tuple[int, list[list[str]], int]:
        sockets = [communicator(f"/ws/jobs/{job.id}/", with_key(token)) for _ in range(3)]
        for ws in sockets:
            await ws.connect()
            await ws.receive_json_from(timeout=5)  # the snapshot
        channels_in_group = len(layer.groups.get(job_group(job.id), {}))
        for status in (JobStatus.SUBMITTED, JobStatus.RUNNING):
            await database_sync_to_async(services.job_transition)(job, status)
        heard = [[(await ws.receive_json_from(timeout=5))["job"]["status"] for _ in range(2)] for ws in sockets]
        for ws in sockets:
            await ws.disconnect()
        await asyncio.sleep(0.05)
        return channels_in_group, heard, len(layer.groups.get(job_group(job.id), {}))

    subscribed, heard, left = async_to_sync(scenario)()
    assert subscribed == 1, "one channel of the process's hub in the group, not one per socket"
    assert heard == [["submitted", "running"]] * 3
    assert left == 0, "the last socket gone, the process leaves the group"


def test_a_socket_that_stops_reading_is_closed_and_holds_nobody_back():
    async def scenario() -> tuple[bool, list[int]]:
        stuck = asyncio.Event()
        closed: list[bool] = []
        fast_sent: list[int] = []

        async def never_done(message: dict[str, Any]) -> None:
            await stuck.wait()  # a client that stopped reading: the send never completes

        async def fast(message: dict[str, Any]) -> None:
            fast_sent.append(message["n"])

        async def overflow() -> None:
            closed.append(True)

        slow_box = Mailbox(never_done, overflow)
        fast_box = Mailbox(fast, overflow)
        for n in range(MAILBOX_LIMIT + 2):
            slow_box.put({"n": n})
            fast_box.put({"n": n})
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        slow_box.close()
        fast_box.close()
        return bool(closed), fast_sent

    closed, fast_sent = async_to_sync(scenario)()
    assert closed, "the socket that fell behind is closed"
    assert fast_sent == list(range(MAILBOX_LIMIT + 2)), "the other socket got every message, in order"


def test_a_held_mailbox_keeps_what_comes_during_the_snapshot_and_sends_it_after():
    async def scenario() -> tuple[list[int], list[int], list[bool]]:
        sent: list[int] = []
        closed: list[bool] = []

        async def handle(message: dict[str, Any]) -> None:
            sent.append(message["n"])

        async def overflow() -> None:
            closed.append(True)

        box = Mailbox(handle, overflow, held=True)
        for n in range(MAILBOX_LIMIT * 4):  # a storm's slow snapshot, on a socket that sees every job
            box.put({"n": n})
        await asyncio.sleep(0.05)
        before_release = list(sent)
        box.release()
        await asyncio.sleep(0.05)
        box.close()
        return before_release, sent, closed

    before_release, sent, closed = async_to_sync(scenario)()
    assert before_release == []  # nothing reaches the socket before its snapshot
    assert sent == list(range(MAILBOX_LIMIT * 4)) and not closed  # all of it after, in order


def test_a_send_that_waits_is_finished_in_a_task_and_what_came_meanwhile_follows_in_order():
    async def scenario() -> tuple[list[int], list[int], list[int]]:
        sent: list[int] = []
        gate = asyncio.Event()

        async def handle(message: dict[str, Any]) -> None:
            if message["n"] == 1:
                await gate.wait()  # a client slow to read: this send waits
            sent.append(message["n"])

        async def overflow() -> None:
            raise AssertionError("nothing overflows here")

        box = Mailbox(handle, overflow)
        box.put({"n": 0})
        at_once = list(sent)  # sent by the put itself: the socket's send did not wait
        for n in range(1, 6):
            box.put({"n": n})
        await asyncio.sleep(0.01)
        while_waiting = list(sent)
        gate.set()
        await asyncio.sleep(0.01)
        box.put({"n": 6})
        box.close()
        return at_once, while_waiting, sent

    at_once, while_waiting, sent = async_to_sync(scenario)()
    assert at_once == [0]
    assert while_waiting == [0], "nothing overtakes the send that waits"
    assert sent == [0, 1, 2, 3, 4, 5, 6]
