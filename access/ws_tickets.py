"""Websocket tickets: how a client that cannot set headers opens a websocket without putting its API
key (or anything that lasts) in a URL, where proxies, logs and browser histories keep it.

`POST /api/ws-tickets/` issues a ticket to the signed-in user; the websocket handshake redeems it
with `?ticket=`. A ticket is random, bound to its user, lives `WS_TICKET_SECONDS` and opens one
connection. It is kept in the shared cache (Redis) by its digest only, and redeemed by deleting that
entry: Redis deletes a key once, so of two handshakes racing with one ticket exactly one wins.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.utils import timezone

TICKET_BYTES = 32
KEY_FORMAT = "ws-ticket:{}"


@dataclass(frozen=True)
class Ticket:
    ticket: str
    expires_at: datetime


def _cache_key(ticket: str) -> str:
    return KEY_FORMAT.format(hashlib.sha256(ticket.encode()).hexdigest())


def ws_ticket_issue(*, user: Any) -> Ticket:
    ticket = secrets.token_urlsafe(TICKET_BYTES)
    seconds = settings.WS_TICKET_SECONDS
    expires_at = timezone.now() + timedelta(seconds=seconds)
    cache.set(_cache_key(ticket), {"user": user.pk, "expires": expires_at.timestamp()}, timeout=seconds)
    return Ticket(ticket=ticket, expires_at=expires_at)


def ws_ticket_redeem(ticket: str) -> Any | None:
    """The active user the ticket was issued to, or None (unknown, used, expired, inactive user).
    The ticket is spent either way."""
    if not ticket or len(ticket) > 2 * TICKET_BYTES:
        return None
    key = _cache_key(ticket)
    entry = cache.get(key)
    # Only the handshake whose delete removed the entry may use it: the cache's get-then-delete is not
    # one step, but a delete is, and it says whether it removed anything.
    if entry is None or not cache.delete(key):
        return None
    if entry["expires"] <= timezone.now().timestamp():
        return None  # the cache's own expiry is whole seconds; the ticket's is exact
    return get_user_model().objects.filter(pk=entry["user"], is_active=True).first()
