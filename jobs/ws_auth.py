"""Websocket authentication: the Django session cookie, or an API key for non-browser clients
(`X-API-Key` / `Authorization: Bearer` headers, or `?token=<key>` where a client cannot set headers)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from django.contrib.auth.models import AnonymousUser

from access.keys import api_key_user, key_from_headers


@database_sync_to_async
def user_for_key(key: str) -> Any:
    return api_key_user(key) or AnonymousUser()


def key_in_scope(scope: dict[str, Any]) -> str | None:
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", [])}
    key = key_from_headers(headers)
    if key:
        return key
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"), max_num_fields=20)
    return query.get("token", [None])[0]


class ApiKeyMiddleware:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        key = key_in_scope(scope)
        if key:
            scope = dict(scope, user=await user_for_key(key))
        return await self.inner(scope, receive, send)


def TokenOrSessionAuthMiddleware(inner: Any) -> Any:
    # The session runs first and sets scope["user"]; a key, when given, decides instead.
    return AuthMiddlewareStack(ApiKeyMiddleware(inner))
