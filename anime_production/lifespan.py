"""A web process's start, as the ASGI lifespan protocol announces it (uvicorn and granian send it
once per process before it serves; daphne sends none, and tests that import the application none).

At the start the process's refresher reads the ETA's history for the kinds of workflow submitted
lately (jobs.eta.history_warm_up), in the background: the server does not wait for it, and a
database that is down only logs. Measured before (devtools/benchmarks/dispatch.py, 1 M jobs of
history, two uvicorn processes): a process's first submit of a kind of workflow read its history
cold, 80 ms of a 164-ms POST, and that was the run's p99 for the POST and for the dispatch behind it.
The refresher also connects the process's broker producer and declares the queues it publishes to
(anime_production.warm_up.broker_warm_up): a process's first wake paid that.

At the end the connections its request and handshake threads kept are closed (access.kept_connections),
so PostgreSQL sees them end rather than drop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from access.kept_connections import kept_connections_close
from anime_production.warm_up import broker_warm_up
from jobs.eta import history_warm_up
from jobs.refresh_ahead import refresh_in_background


async def lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            history_warm_up()
            refresh_in_background(("broker", "warm-up"), broker_warm_up)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await asyncio.to_thread(kept_connections_close)  # Django's database calls are sync only
            await send({"type": "lifespan.shutdown.complete"})
            return
