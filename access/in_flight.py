"""At most LIST_REQUESTS_IN_FLIGHT API list requests of one credential at a time in a web process.

Django runs sync views on one thread per process, so a user with 20 list requests in flight holds
every process and everyone else's requests wait behind them: another user's `GET /api/jobs/<id>/`
p99 went from 103 ms to 1.7 s under such a flood (devtools/benchmarks/isolation.py). The rate
throttles never answered: a flood of big pages is slow, not frequent. This ASGI middleware runs on
the event loop, before a request queues for that thread, and answers the excess at once with a 429
and its reason. A credential is what the request carries (its API key or session cookie), counted
by its digest; requests without one meet the anonymous rate throttle instead.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from typing import Any

LIST_REQUESTS_IN_FLIGHT = 2
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

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        key = None
        if scope["type"] == "http" and scope.get("method") == "GET" and LIST_PATH.match(scope.get("path", "")):
            key = credential(scope)
        if key is None:
            return await self.app(scope, receive, send)
        if self.in_flight[key] >= LIST_REQUESTS_IN_FLIGHT:
            return await too_many(send)
        self.in_flight[key] += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            self.in_flight[key] -= 1
            if not self.in_flight[key]:
                del self.in_flight[key]


async def too_many(send: Any) -> None:
    detail = f"at most {LIST_REQUESTS_IN_FLIGHT} list requests at a time; wait for one to finish"
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 429, "headers": [*headers, (b"retry-after", b"1")]})
    await send({"type": "http.response.body", "body": body})
