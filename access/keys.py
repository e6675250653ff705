"""API keys: create (shown once), authenticate, revoke. Hashed at rest, expiring, several per user.

A key reads `ap_<prefix>_<secret>`: the prefix finds the row, the digest of the whole key proves it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
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
    return record.user


def api_key_revoke(record: ApiKey) -> bool:
    """Compare-and-set: False when it was already revoked."""
    return bool(ApiKey.objects.filter(pk=record.pk, revoked_at__isnull=True).update(revoked_at=timezone.now()))


def key_from_headers(headers: dict[str, str]) -> str | None:
    """`X-API-Key: <key>`, or `Authorization: Bearer <key>` / `Authorization: Token <key>`."""
    if headers.get("x-api-key"):
        return headers["x-api-key"]
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() in {"bearer", "token"} and value.strip().startswith(KEY_START):
        return value.strip()
    return None
