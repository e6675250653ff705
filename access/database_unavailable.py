"""The database down (a PostgreSQL restart, a failover, a full connection table) is an expected
condition, answered as one: HTTP 503 with Retry-After and a body that says so, instead of a 500 that
says nothing; a websocket handshake is turned away the same way (503, or closed 4503). Nothing is half-made: a request
fails before its transaction commits, and a job's Celery task is sent only on commit.

One place for both: `DatabaseUnavailableMiddleware` (Django's middleware list: every view, the REST
API and the admin alike) and `DatabaseUnavailableWebsocket` (asgi.py, around the websocket stack).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import InterfaceError, OperationalError, connections
from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger(__name__)

# What psycopg (and sqlite3) raise, through Django, when the server cannot be reached or went away.
DATABASE_DOWN = (OperationalError, InterfaceError)
RETRY_AFTER_SECONDS = 5
MESSAGE = "The database is unavailable for a moment; nothing was saved. Try again shortly."
# The websocket close code for "try again later" when the server cannot answer the handshake with an
# HTTP status of its own choosing (daphne): 4503, beside the consumers' 4400/4401/4403 (RFC 6455's
# 1013 would say the same, but autobahn lets a server send only 1000 and 3000-4999).
WS_TRY_AGAIN_LATER = 4503


def connections_drop() -> None:
    """Close this thread's broken connections, so the next request connects afresh instead of
    failing on a socket the server closed (Django closes them only at the end of a request)."""
    for connection in connections.all(initialized_only=True):
        try:
            connection.close()
        except DATABASE_DOWN:
            pass


def database_unavailable_response(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", ""):
        response: HttpResponse = JsonResponse({"detail": MESSAGE, "code": "database_unavailable"}, status=503)
    else:
        response = HttpResponse(MESSAGE, status=503, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, DATABASE_DOWN):
            return None
        logger.warning("%s %s: database unavailable: %s", request.method, request.path, exception)
        connections_drop()
        return database_unavailable_response(request)


class DatabaseUnavailableWebsocket:
    """ASGI middleware: a websocket whose handshake (the key, ticket or session lookup, the snapshot)
    finds the database down is answered 503 + Retry-After where the server lets the application
    choose the HTTP answer (uvicorn), otherwise accepted and closed at once with 4503 (daphne)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        state = {"accepted": False, "closed": False}

        async def tracked_send(message: dict[str, Any]) -> None:
            if message["type"] == "websocket.accept":
                state["accepted"] = True
            elif message["type"] in {"websocket.close", "websocket.http.response.body"}:
                state["closed"] = True
            await send(message)

        try:
            return await self.inner(scope, receive, tracked_send)
        except DATABASE_DOWN as exc:
            logger.warning("websocket %s: database unavailable: %s", scope.get("path"), exc)
            if state["closed"]:
                return None
            await self._turn_away(scope, send, accepted=state["accepted"])
            return None

    @staticmethod
    async def _turn_away(scope: dict[str, Any], send: Any, *, accepted: bool) -> None:
        if not accepted and "websocket.http.response" in scope.get("extensions", {}):
            body = MESSAGE.encode()
            headers = [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
                (b"content-length", str(len(body)).encode()),
            ]
            await send({"type": "websocket.http.response.start", "status": 503, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
            return
        if not accepted:
            await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": WS_TRY_AGAIN_LATER, "reason": "database unavailable"})
