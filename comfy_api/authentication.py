"""The front door's credentials: the project's API key, given as ComfyUI's clients give one.

Besides `X-API-Key` and `Authorization: Bearer` (access.authentication) and the session, the key may
come as HTTP Basic credentials (`Authorization: Basic base64(<any name>:<API key>)`, or the key as
the name with no password): ComfyUI has no authentication of its own, so its clients carry a
credential as a user and password, often in the base URL (`http://me:<key>@host/`), which `requests`
and `websockets` send as Basic. A Basic header that is not a live API key is refused; it never falls
through to the session.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from access.keys import KEY_START, api_key_user

BASIC_HEADER_MAX_CHARS = 1024


def key_from_basic(authorization: str) -> str | None:
    """The API key in an `Authorization: Basic ...` value; None when it is no Basic header. A Basic
    header without a key in it gives "" (refused by the caller)."""
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    if len(encoded) > BASIC_HEADER_MAX_CHARS:
        return ""
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ""
    name, _, password = decoded.partition(":")
    for candidate in (password, name):
        if candidate.strip().startswith(KEY_START):
            return candidate.strip()
    return ""


class BasicApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, None] | None:
        key = key_from_basic(request.META.get("HTTP_AUTHORIZATION", ""))
        if key is None:
            return None
        user = api_key_user(key) if key else None
        if user is None:
            raise AuthenticationFailed("give an API key as the password (or the user name) of Basic credentials")
        return user, None

    def authenticate_header(self, request: Request) -> str:
        return 'Basic realm="comfyui"'
