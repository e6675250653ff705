"""API keys: create (shown once), authenticate, revoke. Hashed at rest, expiring, several per user.

A key reads `ap_<prefix>_<secret>`: the prefix finds the row, the digest of the whole key proves it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from access.models import ApiKey

KEY_START = "ap_"
PREFIX_CHARS = 12
# How stale `last_used_at` may be: one write per key per minute, not one per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)
RECENT_KEYS_MAX = 4096


class ApiKeyRefused(ValueError):
    """A key that cannot be made (a bad name, too many keys, a bad lifetime); the message says why."""


@dataclass(frozen=True)
class NewKey:
    record: ApiKey
    key: str  # the only time the whole key exists outside its owner's hands


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def api_key_create(*, user: Any, name: str, days: int | None = None) -> NewKey:
    name = name.strip()
    if not name or len(name) > 100:
        raise ApiKeyRefused("a key needs a name of 1 to 100 characters")
    days = settings.API_KEY_DAYS if days is None else days
    if not 1 <= days <= settings.API_KEY_MAX_DAYS:
        raise ApiKeyRefused(f"a key lives 1 to {settings.API_KEY_MAX_DAYS} days")
    if api_keys_live(user).count() >= settings.API_KEYS_PER_USER:
        raise ApiKeyRefused(f"at most {settings.API_KEYS_PER_USER} live keys per user: revoke one first")
    prefix = secrets.token_hex(PREFIX_CHARS // 2)
    key = f"{KEY_START}{prefix}_{secrets.token_urlsafe(32)}"
    try:
        with transaction.atomic():
            record = ApiKey.objects.create(
                user=user,
                name=name,
                prefix=prefix,
                digest=_digest(key),
                expires_at=timezone.now() + timedelta(days=days),
            )
    except IntegrityError as exc:
        raise ApiKeyRefused(f"you already have a live key named {name!r}") from exc
    return NewKey(record=record, key=key)


def api_keys_live(user: Any) -> Any:
    return ApiKey.objects.filter(user=user, revoked_at__isnull=True, expires_at__gt=timezone.now())


def api_key_user(key: str) -> Any | None:
    """The active user a live key belongs to, or None (unknown, revoked, expired, inactive user)."""
    record = api_key_record(key)
    return None if record is None else record.user


def api_key_record(key: str) -> ApiKey | None:
    """The live key `key` is, its active user loaded; None for an unknown, revoked or expired key
    or an inactive user."""
    if not (key.isascii() and key.strip().isprintable()):
        return None  # keys are printable ASCII; a NUL would reach the lookup (PostgreSQL refuses it: a 500)
    parts = key.strip().split("_", 2)
    if len(parts) != 3 or f"{parts[0]}_" != KEY_START or len(parts[1]) != PREFIX_CHARS:
        return None
    record = ApiKey.objects.select_related("user").filter(prefix=parts[1]).first()
    if record is None or not hmac.compare_digest(record.digest, _digest(key.strip())):
        return None
    now = timezone.now()
    if record.revoked_at is not None or record.expires_at <= now or not record.user.is_active:
        return None
    if record.last_used_at is None or now - record.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=record.pk).update(last_used_at=now)
    return record


class RecentKeyUsers:
    """The users of live keys this process checked in the last API_KEY_RECENT_SECONDS, for websocket
    handshakes: a storm of 2,000 sockets opened with the keys of a hundred users reads a hundred
    keys, not 2,000 (each read was two queries on the handshake's thread). Only live keys are kept,
    by digest, never past their expiry; a key revoked in this process is forgotten at once, in
    another within API_KEY_RECENT_SECONDS (sockets already open stay open either way)."""

    def __init__(self) -> None:
        self._users: dict[str, tuple[Any, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Any | None:
        if not key.isascii():
            return None  # never a key (api_key_record refuses it too)
        found = self._users.get(_digest(key.strip()))
        if found is None or found[1] <= time.monotonic():
            return None
        return found[0]

    def remember(self, key: str, user: Any, expires_at: Any) -> None:
        seconds = min(settings.API_KEY_RECENT_SECONDS, (expires_at - timezone.now()).total_seconds())
        if seconds <= 0:
            return
        with self._lock:
            if len(self._users) >= RECENT_KEYS_MAX:
                now = time.monotonic()
                self._users = {digest: kept for digest, kept in self._users.items() if kept[1] > now}
                if len(self._users) >= RECENT_KEYS_MAX:
                    self._users.pop(next(iter(self._users)))
            self._users[_digest(key.strip())] = (user, time.monotonic() + seconds)

    def forget(self, digest: str) -> None:
        with self._lock:
            self._users.pop(digest, None)


recent_key_users = RecentKeyUsers()


def api_key_user_recent(key: str) -> Any | None:
    """api_key_user, through this process's recent answers (RecentKeyUsers): for handshakes only;
    REST requests always read the key."""
    user = recent_key_users.get(key)
    if user is not None:
        return user
    record = api_key_record(key)
    if record is None:
        return None
    recent_key_users.remember(key, record.user, record.expires_at)
    return record.user


def api_key_revoke(record: ApiKey) -> bool:
    """Compare-and-set: False when it was already revoked."""
    recent_key_users.forget(record.digest)
    return bool(ApiKey.objects.filter(pk=record.pk, revoked_at__isnull=True).update(revoked_at=timezone.now()))


def key_from_headers(headers: dict[str, str]) -> str | None:
    """`X-API-Key: <key>`, or `Authorization: Bearer <key>` / `Authorization: Token <key>`."""
    if headers.get("x-api-key"):
        return headers["x-api-key"]
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() in {"bearer", "token"} and value.strip().startswith(KEY_START):
        return value.strip()
    return None
