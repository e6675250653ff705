"""The subscribers of devtools/benchmarks/fanout.py: websocket clients in processes of their own.

A process holds its share of the sockets on one event loop (aiohttp). Told to connect, it opens
them all at once and reports when each handshake and each snapshot arrived; told to stop, it
closes them and hands back every update it received as (when, job, version). Receiving tens of
thousands of messages a second is real work: in the benchmark's process it would delay the
publisher, and one process of clients would be the bottleneck it measures.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import aiohttp

CONNECT_TIMEOUT = 60.0  # the connect storm is measured, not cut short: a late handshake still counts


@dataclass
class Socket:
    path: str
    headers: dict[str, str]


@dataclass
class Received:
    """Every update of one process's sockets, in three flat arrays (tens of thousands a second)."""

    at: array[float] = field(default_factory=lambda: array("d"))
    job: array[int] = field(default_factory=lambda: array("i"))
    version: array[int] = field(default_factory=lambda: array("q"))
    other: int = 0  # updates that named no known job (none expected)


@dataclass
class Connected:
    opened_at: list[float]  # when this process began opening its sockets
    handshake_at: list[float]  # time.time() of each handshake that succeeded
    snapshot_at: list[float]
    failures: dict[str, int]


async def _follow(
    session: aiohttp.ClientSession,
    url: str,
    socket: Socket,
    job_index: dict[str, int],
    received: Received,
    connected: Connected,
) -> None:
    try:
        ws = await session.ws_connect(url + socket.path, headers=socket.headers, max_msg_size=0, autoping=True)
    except Exception as exc:
        name = type(exc).__name__
        connected.failures[name] = connected.failures.get(name, 0) + 1
        return
    connected.handshake_at.append(time.time())
    first = True
    try:
        async for message in ws:
            now = time.time()
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            if first:
                connected.snapshot_at.append(now)
                first = False
                continue
            job = json.loads(message.data).get("job")
            index = job_index.get(job["id"]) if job else None
            if index is None:
                received.other += 1
                continue
            received.at.append(now)
            received.job.append(index)
            received.version.append(job["version"])
    finally:
        await ws.close()


async def _run(url: str, sockets: list[Socket], job_ids: list[str], pipe: Connection) -> None:
    loop = asyncio.get_running_loop()
    job_index = {job_id: index for index, job_id in enumerate(job_ids)}
    received, connected = Received(), Connected([], [], [], {})
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=None)
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await loop.run_in_executor(None, pipe.recv)  # "connect"
        connected.opened_at.append(time.time())
        tasks = [
            asyncio.create_task(_follow(session, url, socket, job_index, received, connected)) for socket in sockets
        ]
        # Reported when every socket has its snapshot or has failed (or the time is up).
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while len(connected.snapshot_at) + sum(connected.failures.values()) < len(sockets):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        pipe.send(connected)
        await loop.run_in_executor(None, pipe.recv)  # "stop"
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    pipe.send(received)


def clients_process(url: str, sockets: list[dict[str, Any]], job_ids: list[str], pipe: Connection) -> None:
    """The entry point of one process of clients (multiprocessing, spawned). Its cyclic collector is
    off: with a thousand sockets' objects alive, its collections stopped the clients' loop for up to
    157 ms (gen2) and 76 ms (gen1) in a run of 2026-12-08, and every socket's delay measured then,
    the floor's as the product's, was the clients' own. A phase's garbage is freed by reference
    counts; the process ends with it."""
    gc.disable()
    asyncio.run(_run(url, [Socket(**socket) for socket in sockets], job_ids, pipe))
