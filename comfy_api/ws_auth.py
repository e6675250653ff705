"""Who opens a front-door websocket, and from where: what ComfyUI's own clients send.

- Credentials: ComfyUI's clients carry a credential as a user and password (often in the base URL,
  `ws://me:<key>@host/comfy/ws`, which Python's `websockets` sends as HTTP Basic): the API key as the
  password (or the name), as comfy_api.authentication reads it for HTTP. Without Basic
  credentials, what the project's other sockets accept (jobs.ws_auth: a key header, `?ticket=`, the
  session). Basic credentials that hold no live key make the user anonymous (4401): never the session.
- Origin: a browser always sends `Origin` with a websocket, so a page on another site is refused as on
  the project's other sockets (ALLOWED_HOSTS); a program that sends none (Python's `websockets` does
  not) cannot be a cross-site page and is let through to the credentials check.
"""

from __future__ import annotations

from typing import Any

from channels.security.websocket import AllowedHostsOriginValidator
from django.contrib.auth.models import AnonymousUser

from comfy_api.authentication import key_from_basic
from jobs.ws_auth import TokenOrSessionAuthMiddleware, user_for_key

Application = Any


def header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


class BasicKeyOrProjectAuth:
    def __init__(self, inner: Application) -> None:
        self.inner = inner
        self.project = TokenOrSessionAuthMiddleware(inner)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        key = key_from_basic(header(scope, b"authorization") or "")
        if key is None:
            return await self.project(scope, receive, send)
        user = await user_for_key(key) if key else AnonymousUser()
        return await self.inner(dict(scope, user=user), receive, send)


class OriginOfBrowsersChecked:
    def __init__(self, inner: Application) -> None:
        self.inner = inner
        self.checked = AllowedHostsOriginValidator(inner)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if header(scope, b"origin") is None:
            return await self.inner(scope, receive, send)
        return await self.checked(scope, receive, send)
