"""Websocket fan-out, as ComfyUI's PromptServer does it.

One socket per clientId (a reconnect with the same id replaces the old one). Messages queued with
`send_sync` go out in order from a single publisher task; `sid=None` means every socket, which is
how `status` is broadcast, and also what happens to progress when a prompt had no client_id.

With `record_sends`, the hub also notes when each `progress` message was written to each socket
(`sent_progress`, served at GET /sim/sent): ComfyUI's messages carry no timestamp, and a latency
benchmark needs the send time of the step a browser is shown.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
from enum import IntEnum
from typing import Any

import aiohttp
from aiohttp import web

logger = logging.getLogger(__name__)


class BinaryEventType(IntEnum):
    PREVIEW_IMAGE = 1
    UNENCODED_PREVIEW_IMAGE = 2
    TEXT = 3
    PREVIEW_IMAGE_WITH_METADATA = 4


# What ComfyUI 0.8.0 answered to feature_flags in preview_metadata.jsonl (with ComfyUI-Manager loaded).
SERVER_FEATURE_FLAGS: dict[str, Any] = {
    "supports_preview_metadata": True,
    "max_upload_size": 104857600,
    "extension": {"manager": {"supports_v4": True}},
}

Message = tuple[str | int, Any, str | None]


class SocketHub:
    def __init__(self, *, record_sends: bool = False) -> None:
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.feature_flags: dict[str, dict[str, Any]] = {}
        # The client of the prompt being executed and the node it last started, like
        # PromptServer.client_id / last_node_id: a reconnecting client is told that node.
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self._outbox: asyncio.Queue[Message] = asyncio.Queue()
        self.sent_progress: list[dict[str, Any]] | None = [] if record_sends else None

    def send_sync(self, event: str | int, data: Any, sid: str | None = None) -> None:
        self._outbox.put_nowait((event, data, sid))

    def supports_preview_metadata(self, sid: str | None) -> bool:
        if sid is None:
            return False
        return self.feature_flags.get(sid, {}).get("supports_preview_metadata", False) is True

    async def publish_forever(self) -> None:
        while True:
            event, data, sid = await self._outbox.get()
            await self.send(event, data, sid)

    async def send(self, event: str | int, data: Any, sid: str | None = None) -> None:
        if isinstance(event, int):
            message: str | bytes = struct.pack(">I", event) + bytes(data)
        else:
            message = json.dumps({"type": event, "data": data})
        if sid is None:
            targets = list(self.sockets.items())
        else:
            targets = [(sid, self.sockets[sid])] if sid in self.sockets else []
        for target_sid, ws in targets:
            if event == "progress" and self.sent_progress is not None:
                self.sent_progress.append({**data, "sid": target_sid, "sent_at": time.time()})
            await _send_ignoring_disconnects(ws, message)

    async def close_all(self) -> None:
        for ws in list(self.sockets.values()):
            await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"Server shutdown")


async def _send_ignoring_disconnects(ws: web.WebSocketResponse, message: str | bytes) -> None:
    try:
        if isinstance(message, str):
            await ws.send_str(message)
        else:
            await ws.send_bytes(message)
    except (aiohttp.ClientError, ConnectionResetError, BrokenPipeError, ConnectionError) as error:
        logger.warning("send error: %s", error)
