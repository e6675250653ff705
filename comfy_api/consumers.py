"""`/comfy/ws?clientId=` (and `/comfy/api/ws`): ComfyUI's websocket, for the caller's prompts submitted
with that clientId, told from the project's tracking (comfy_api.ws_follow, comfy_api.ws_messages).

Authentication is the project's websockets' own (jobs.ws_auth: an API key in `X-API-Key` or
`Authorization`, a `?ticket=` from POST /api/ws-tickets/, or the session): a user hears only of their
own prompts, whatever clientId they give. The socket joins the user's job group, where every job of
theirs is broadcast (coalesced by the tracker), and keeps only this clientId's prompts.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from channels.db import database_sync_to_async

from comfy_api.models import CLIENT_ID_MAX_CHARS
from comfy_api.ws_announce import front_door_group
from comfy_api.ws_follow import ClientStream, Frame
from jobs.broadcast import user_group
from jobs.consumers import CLOSE_BAD_REQUEST, CLOSE_TOO_MANY_CONNECTS, JobSocketConsumer, handshake_sync_to_async
from jobs.ws_auth import query_value

logger = logging.getLogger(__name__)

# Open front-door sockets per user in one web process (ComfyUI's editor opens one per tab).
CONNECTIONS_PER_USER = 20
# What a client may send (its `feature_flags`): anything longer is not read.
CLIENT_MESSAGE_MAX_CHARS = 4096
CLIENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:\-]+$")
FEATURE_FLAGS = {"supports_preview_metadata": True}

# Updates that need the database (a gap in the events, a prompt's end, a preview) run on threads of
# their own: not on the one thread Django's sync views share.
UPDATE_THREADS = 4
_update_pool = ThreadPoolExecutor(max_workers=UPDATE_THREADS, thread_name_prefix="comfy-ws")

_open_lock = threading.Lock()
_open_sockets: Counter[int] = Counter()


def update_sync_to_async(function: Callable[..., Any]) -> Callable[..., Any]:
    return database_sync_to_async(function, thread_sensitive=False, executor=_update_pool)


def client_id_problem(client_id: str) -> str:
    if len(client_id) > CLIENT_ID_MAX_CHARS:
        return f"clientId longer than {CLIENT_ID_MAX_CHARS} characters"
    if not CLIENT_ID_PATTERN.match(client_id):
        return "clientId may hold only letters, digits and _ . : -"
    return ""


def socket_opened(user_id: int) -> bool:
    with _open_lock:
        if _open_sockets[user_id] >= CONNECTIONS_PER_USER:
            return False
        _open_sockets[user_id] += 1
        return True


def socket_closed(user_id: int) -> None:
    with _open_lock:
        _open_sockets[user_id] -= 1
        if _open_sockets[user_id] <= 0:
            del _open_sockets[user_id]


class ComfyClientConsumer(JobSocketConsumer):
    async def connect(self) -> None:
        user = await self.admitted_user()
        if user is None:
            return
        client_id = query_value(self.scope, "clientId")
        # ComfyUI gives a socket without a clientId one of its own (and says which in `status.sid`).
        client_id = uuid.uuid4().hex if client_id is None else client_id
        problem = client_id_problem(client_id)
        if problem:
            await self.refuse(CLOSE_BAD_REQUEST, problem)
            return
        if not socket_opened(user.pk):
            await self.refuse(CLOSE_TOO_MANY_CONNECTS, f"more than {CONNECTIONS_PER_USER} open front-door sockets")
            return
        self.counted_user = user.pk
        self.stream = ClientStream(user, client_id)
        # Join before reading the state, so nothing falls between the two.
        self.groups_joined = [user_group(user.pk), front_door_group(user.pk)]
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        await self.send_frames(await handshake_sync_to_async(self.stream.opening)())

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)
        if getattr(self, "counted_user", None) is not None:
            socket_closed(self.counted_user)
            self.counted_user = None

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """ComfyUI's clients send one thing: `feature_flags`, answered with the front door's own."""
        if not text_data or len(text_data) > CLIENT_MESSAGE_MAX_CHARS:
            return
        try:
            sent = json.loads(text_data)
        except ValueError:
            return
        if (
            isinstance(sent, dict)
            and sent.get("type") == "feature_flags"
            and isinstance(sent.get("data"), dict)
            and not getattr(self, "flags_answered", False)
        ):
            # Once per socket, as ComfyUI reads them (its first message): a client's repeats are not
            # each worth an answer, whatever rate it sends them at.
            self.flags_answered = True
            self.stream.preview_metadata = sent["data"].get("supports_preview_metadata") is True
            await self.send_json({"type": "feature_flags", "data": FEATURE_FLAGS})

    async def job_state(self, event: dict[str, Any]) -> None:
        """A job of the user's changed: told if it is one of this clientId's prompts."""
        stream = getattr(self, "stream", None)
        job_id = event["id"]
        if stream is None or job_id in stream.ignored:
            return
        if job_id not in stream.prompts:
            learned = await update_sync_to_async(stream.learn)(job_id)
            if learned is None:
                return
            await self.send_frames(learned)
        state = json.loads(event["state_json"])
        events = json.loads(event["events_json"])
        frames = stream.fast(job_id, state, events)
        if frames is None:
            frames = await update_sync_to_async(stream.update)(job_id, state, events)
        await self.send_frames(frames)

    async def front_door_queue(self, event: dict[str, Any]) -> None:
        """The caller's front-door queue changed (a prompt submitted or deleted): its new `status`."""
        stream = getattr(self, "stream", None)
        if stream is not None:
            await self.send_frames(await update_sync_to_async(stream.queue_status)())

    async def send_frames(self, frames: list[Frame]) -> None:
        for frame in frames:
            if isinstance(frame, bytes):
                await self.send(bytes_data=frame)
            else:
                await self.send(text_data=json.dumps(frame))
