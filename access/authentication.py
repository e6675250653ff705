"""DRF authentication by API key (`X-API-Key` or `Authorization: Bearer`)."""

from __future__ import annotations

from typing import Any

from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from access.keys import api_key_user, key_from_headers


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, None] | None:
        headers = {name.lower(): value for name, value in request.headers.items()}
        key = key_from_headers(headers)
        if key is None:
            return None
        user = api_key_user(key)
        if user is None:
            raise AuthenticationFailed("unknown, expired or revoked API key")
        return user, None

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'
