"""Standard Webhooks signatures (https://www.standardwebhooks.com/): plain Python, no Django.

A secret is `whsec_` + base64 of random bytes. A message is signed as
`v1,<base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}">` with the secret's bytes;
several signatures (a secret being rotated) go in one header, separated by spaces.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
# Standard Webhooks asks for 24 to 64 bytes of key.
SECRET_MIN_BYTES = 24
SECRET_MAX_BYTES = 64
CONTENT_TYPE = "application/json"


def secret_generate() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key a `whsec_` secret stands for."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)


def secret_problem(secret: str) -> str | None:
    """Why `secret` (one a client chose) cannot sign messages, or None."""
    if not secret.startswith(SECRET_PREFIX):
        return f"a secret starts with {SECRET_PREFIX!r} followed by base64"
    try:
        key = secret_key(secret)
    except (binascii.Error, ValueError):
        return f"a secret is {SECRET_PREFIX!r} followed by base64; this is not base64"
    if not SECRET_MIN_BYTES <= len(key) <= SECRET_MAX_BYTES:
        return f"a secret holds {SECRET_MIN_BYTES} to {SECRET_MAX_BYTES} bytes; this one holds {len(key)}"
    return None


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(message_id: str, timestamp: int, body: bytes, secrets_in_use: Sequence[str]) -> dict[str, str]:
    """The three Standard Webhooks headers (one signature per secret in use) and the content type."""
    return {
        "content-type": CONTENT_TYPE,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(secret, message_id, timestamp, body) for secret in secrets_in_use),
    }
