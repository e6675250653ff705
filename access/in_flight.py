"""At most LIST_REQUESTS_IN_FLIGHT API list requests of one credential at a time in a web process.

A process's requests share its cores and its few request threads (access/request_threads.py), so a
user with 20 list requests in flight holds every process and everyone else's requests wait behind
them: another user's `GET /api/jobs/<id>/` p99 went from 103 ms to 1.7 s under such a flood
(devtools/benchmarks/isolation.py). The rate throttles never answered: a flood of big pages is slow,
not frequent. This ASGI middleware runs on the event loop, before a request queues for a thread:
past the bound, a few more wait their turn there (costing nothing while they wait), and the excess
is answered at once with a 429 and its reason. A flood that was answered 429 retried at once,
thousands of times a second, and those answers were CPU the other users' requests lacked. A
credential is what the request carries (its API key or session cookie), counted by its digest;
requests without one meet the anonymous rate throttle instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections import Counter, deque
from typing import Any

LIST_REQUESTS_IN_FLIGHT = 1
# Past the bound, this many more of a credential's list requests wait their turn (costing nothing while
# they wait), each at most LIST_WAIT_SECONDS; the rest are answered 429 at once.
LIST_REQUESTS_WAITING = 32
LIST_WAIT_SECONDS = 10.0
LIST_PATH = re.compile(r"^/api/[a-z-]+/$")
CREDENTIAL_HEADERS = (b"x-api-key", b"authorization", b"cookie")


def credential(scope: dict[str, Any]) -> str | None:
    """A digest of the request's credential headers, or None when it carries none."""
    found = [value for name, value in scope.get("headers", []) if name.lower() in CREDENTIAL_HEADERS]
    if not found:
        return None
    return hashlib.sha256(b"\n".join(sorted(found))).hexdigest()


class ListRequestsInFlight:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.in_flight: Counter[str] = Counter()
        # Requests waiting for one of the credential's places, in order: a finishing request hands
        # its place to the first (the count stays), so nobody can jump the line.
        self.waiting: dict[str, deque[asyncio.Future[None]]] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        key = None
        if scope["type"] == "http" and scope.get("method") == "GET" and LIST_PATH.match(scope.get("path", "")):
            key = credential(scope)
        if key is None:
            return await self.app(scope, receive, send)
        if self.in_flight[key] < LIST_REQUESTS_IN_FLIGHT:
            self.in_flight[key] += 1
        elif not await self._place_when_free(key):
            return await too_many(send)
        try:
            return await self.app(scope, receive, send)
        finally:
            self._release(key)

    async def _place_when_free(self, key: str) -> bool:
        """Wait for a place handed over by a finishing request; False when too many wait already or
        none came in time. A request whose client went away while waiting gives its place back."""
        line = self.waiting.setdefault(key, deque())
        if len(line) >= LIST_REQUESTS_WAITING:
            return False
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        line.append(turn)
        try:
            await asyncio.wait({turn}, timeout=LIST_WAIT_SECONDS)
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release(key)
            else:
                turn.cancel()
            raise
        if turn.done():
            return True
        turn.cancel()  # skipped by _release: its place goes to the next in line
        return False

    def _release(self, key: str) -> None:
        line = self.waiting.get(key)
        while line:
            turn = line.popleft()
            if not turn.done():
                turn.set_result(None)  # the place passes on; the count stays
                return
        self.waiting.pop(key, None)
        self.in_flight[key] -= 1
        if not self.in_flight[key]:
            del self.in_flight[key]


async def too_many(send: Any) -> None:
    detail = (
        f"at most {LIST_REQUESTS_IN_FLIGHT} list requests at a time and {LIST_REQUESTS_WAITING} waiting; "
        "wait for one to finish"
    )
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 429, "headers": [*headers, (b"retry-after", b"1")]})
    await send({"type": "http.response.body", "body": body})
