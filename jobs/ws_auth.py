"""Websocket authentication at the handshake, first match wins:

1. an API key in a header (`X-API-Key` / `Authorization: Bearer`), for non-browser clients;
2. `?ticket=<ticket>` from `POST /api/ws-tickets/` (access.ws_tickets), spent by this handshake;
3. `?token=<API key>` only where `WS_ALLOW_TOKEN_IN_URL` allows it (a key in a URL ends up in
   proxies' and servers' logs and in browser histories);
4. the Django session cookie.

A credential that is given but refused makes the user anonymous (the consumer closes with 4401):
it never falls through to a weaker one.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.auth import AuthMiddlewareStack
from django.conf import settings
from django.contrib.auth.models import AnonymousUser

from access.keys import api_key_user_recent, key_from_headers, recent_key_users
from access.ws_tickets import ws_ticket_redeem
from jobs.consumers import handshake_sync_to_async

QUERY_MAX_FIELDS = 20


@handshake_sync_to_async
def _user_for_key_read(key: str) -> Any:
    return api_key_user_recent(key) or AnonymousUser()


async def user_for_key(key: str) -> Any:
    """The key's user: one this process checked in the last few seconds with no thread hop and no
    query (access.keys.RecentKeyUsers), else read."""
    return recent_key_users.get(key) or await _user_for_key_read(key)


@handshake_sync_to_async
def user_for_ticket(ticket: str) -> Any:
    return ws_ticket_redeem(ticket) or AnonymousUser()


def query_value(scope: dict[str, Any], name: str) -> str | None:
    try:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), max_num_fields=QUERY_MAX_FIELDS)
    except ValueError:
        return None  # too many fields: the consumer refuses the query with its reason (4400)
    values = query.get(name)
    return values[-1] if values else None


def key_in_scope(scope: dict[str, Any]) -> str | None:
    """An API key from the headers, or from `?token=` where the settings allow keys in URLs."""
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", [])}
    key = key_from_headers(headers)
    if key:
        return key
    return query_value(scope, "token") if settings.WS_ALLOW_TOKEN_IN_URL else None


class TokenOrSessionAuthMiddleware:
    """A key or a ticket, when given, decides alone; only a handshake with neither reads the session.
    (Channels' session middleware loads the user through a thread hop of its own, which a connect
    storm of API-key clients would pay for nothing.)"""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.session = AuthMiddlewareStack(inner)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        key = key_in_scope(scope)
        ticket = None if key else query_value(scope, "ticket")
        if key:
            return await self.inner(dict(scope, user=await user_for_key(key)), receive, send)
        if ticket is not None:
            return await self.inner(dict(scope, user=await user_for_ticket(ticket)), receive, send)
        if query_value(scope, "token") is not None:
            return await self.inner(dict(scope, user=AnonymousUser()), receive, send)  # a key in a URL, refused
        return await self.session(scope, receive, send)
