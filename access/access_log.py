"""The web server's access log, without query strings.

A query string can carry a credential: a websocket ticket (`?ticket=`), an API key where
`WS_ALLOW_TOKEN_IN_URL` still allows one (`?token=`). daphne's own access log prints every HTTP
request with its query string (`"GET /api/jobs/?token=... HTTP"`), so daphne runs with it off
(`--verbosity 0`, `web_server_argv`) and this ASGI middleware logs each request and websocket by
its path alone. `RedactUrlCredentials` is the second line: a log filter that blanks `ticket=` and
`token=` values in any message that still quotes a URL (Django's runserver, a library's warning).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

logger = logging.getLogger(__name__)

ASGI_APPLICATION = "anime_production.asgi:application"
CREDENTIAL_IN_URL = re.compile(r"(?<=[?&;])(ticket|token)=[^&;\s\"'#]*", re.IGNORECASE)


def web_server_argv(host: str, port: int) -> list[str]:
    """daphne serving the project, without its access log: at verbosity 0 it prints no access lines
    (and nothing else changes: Django's LOGGING decides the rest); AccessLogMiddleware logs instead."""
    return [sys.executable, "-m", "daphne", "--verbosity", "0", "-b", host, "-p", str(port), ASGI_APPLICATION]


def uvicorn_argv(host: str, port: int, workers: int) -> list[str]:
    """uvicorn serving the project as `make run` and Docker run it: `workers` processes on one port
    (each subscribed once per channel-layer group), its access log off as daphne's is, websocket
    messages from clients bounded (they send none that matter), a listen backlog that holds a
    connect storm (README "Serving" has the figures that chose it), and the lifespan protocol on: each
    process reads history ahead as it starts (anime_production/lifespan.py)."""
    return [
        sys.executable, "-m", "uvicorn", "--host", host, "--port", str(port), "--workers", str(workers),
        "--no-access-log", "--lifespan", "on", "--ws-max-size", "65536", "--backlog", "4096", ASGI_APPLICATION,
    ]  # fmt: skip


def client_address(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


class AccessLogMiddleware:
    """One line per HTTP response and per websocket connect, reject and disconnect: the client, the
    method and the path (never the query string), the status or close code, bytes, milliseconds."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "http":
            return await self.http(scope, receive, send)
        if scope["type"] == "websocket":
            return await self.websocket(scope, receive, send)
        return await self.app(scope, receive, send)

    async def http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = time.monotonic()
        status, size = 0, 0

        async def logged_send(message: dict[str, Any]) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
                if not message.get("more_body", False):
                    logger.info(
                        '%s "%s %s" %s %s %.0fms',
                        client_address(scope),
                        scope.get("method", "-"),
                        scope.get("path", ""),
                        status,
                        size,
                        (time.monotonic() - started) * 1000,
                    )
            await send(message)

        await self.app(scope, receive, logged_send)

    async def websocket(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        client, path = client_address(scope), scope.get("path", "")
        accepted = False

        async def logged_send(message: dict[str, Any]) -> None:
            nonlocal accepted
            if message["type"] == "websocket.accept":
                accepted = True
                logger.info('%s "WSCONNECT %s"', client, path)
            elif message["type"] == "websocket.close" and not accepted:
                logger.info('%s "WSREJECT %s" %s', client, path, message.get("code", 1000))
            await send(message)

        async def logged_receive() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "websocket.disconnect" and accepted:
                logger.info('%s "WSDISCONNECT %s" %s', client, path, message.get("code", "-"))
            return message

        await self.app(scope, logged_receive, logged_send)


class RedactUrlCredentials(logging.Filter):
    """Blanks the value of `ticket=` and `token=` in a URL quoted by any log message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "ticket=" in message.lower() or "token=" in message.lower():
            record.msg = CREDENTIAL_IN_URL.sub(r"\1=[redacted]", message)
            record.args = None
        return True
