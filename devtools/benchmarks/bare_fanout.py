"""The floor of devtools/benchmarks/fanout.py: a bare websocket fan-out of the same updates.

    python -m devtools.benchmarks.bare_fanout --port 8765 --prefix <the channel layer's prefix>

An aiohttp server that subscribes to the same Redis pub/sub channels the channel layer publishes
to (one subscription per group, as the pub/sub layer does per process), unpacks each message once
and writes the very text a subscriber of the product receives to every socket of its group: no
authentication, no snapshot, no consumer, no version filter. What the product spends above this
is what its web server, Channels and our consumers cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import defaultdict
from typing import Any

import msgpack  # type: ignore[import-untyped]
import redis.asyncio as aioredis
from aiohttp import WSMsgType, web

STAFF_GROUP = "jobs-staff"  # as jobs.broadcast names them: this server imports nothing of the product


def update_text(message: dict[str, Any], group: str) -> str:
    """The text the product's consumer writes for a group message: made from the state's JSON where
    the message carries it (jobs.broadcast.job_state_message), else from the state itself (the
    message as it was before, to measure an older commit against the same floor)."""
    if "state_json" in message:
        events = f', "events": {message["events_json"]}' if group.startswith("job-") else ""
        return f'{{"type": "update", "job": {message["state_json"]}{events}}}'
    if group.startswith("job-"):
        return json.dumps({"type": "update", "job": message["job"], "events": message.get("events", [])})
    return json.dumps({"type": "update", "job": message["job"]})


class Fanout:
    def __init__(self, redis_url: str, prefix: str) -> None:
        self.redis = aioredis.Redis.from_url(redis_url)
        self.pubsub = self.redis.pubsub()
        self.prefix = f"{prefix}__group__"
        self.sockets: dict[str, set[web.WebSocketResponse]] = defaultdict(set)
        self.subscribed: set[str] = set()
        self.lock = asyncio.Lock()  # one command at a time on the one pub/sub connection

    async def join(self, group: str, ws: web.WebSocketResponse) -> None:
        self.sockets[group].add(ws)
        async with self.lock:
            if group not in self.subscribed:
                await self.pubsub.subscribe(self.prefix + group)
                self.subscribed.add(group)

    async def relay(self) -> None:
        while True:
            if not self.pubsub.subscribed:
                await asyncio.sleep(0.05)
                continue
            async with self.lock:
                message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
            if message is None:
                continue
            group = message["channel"].decode()[len(self.prefix) :]
            text = update_text(msgpack.unpackb(message["data"]), group)
            for ws in list(self.sockets.get(group, ())):
                if not ws.closed:
                    await ws.send_str(text)

    async def socket(self, request: web.Request) -> web.WebSocketResponse:
        job_id = request.match_info.get("job_id")
        group = f"job-{job_id}" if job_id else STAFF_GROUP
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await self.join(group, ws)
        await ws.send_str(json.dumps({"type": "snapshot"}))
        try:
            async for message in ws:
                if message.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
        finally:
            self.sockets[group].discard(ws)
        return ws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefix", required=True, help="the channel layer's prefix (CHANNEL_LAYER_PREFIX)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    fanout = Fanout(args.redis_url, args.prefix)
    app = web.Application()
    app.router.add_get("/ws/jobs/", fanout.socket)
    app.router.add_get("/ws/jobs/{job_id}/", fanout.socket)

    async def start_relay(app: web.Application) -> None:
        app["relay"] = asyncio.create_task(fanout.relay())

    app.on_startup.append(start_relay)
    web.run_app(app, host="127.0.0.1", port=args.port, print=lambda line: print(line, flush=True), backlog=4096)


if __name__ == "__main__":
    main()
