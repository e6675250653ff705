"""What every front-door view shares: its credentials, rates, and ComfyUI's JSON bodies.

ComfyUI reads a POST body as JSON whatever its Content-Type (clients post `data=json.dumps(...)`
with none), so the body is read here rather than by DRF's parsers, with the same limits: the size
(DATA_UPLOAD_MAX_MEMORY_SIZE), the depth and the text rules of access.parsers.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework.authentication import SessionAuthentication
from rest_framework.request import Request
from rest_framework.views import APIView

from access.authentication import ApiKeyAuthentication
from access.parsers import json_problem
from comfy_api.authentication import BasicApiKeyAuthentication


class BodyRefused(ValueError):
    """A body that is not acceptable JSON; the message says why."""


class FrontDoorView(APIView):
    """A ComfyUI endpoint: a key (header or Basic) or the session; a user acts on their own prompts."""

    authentication_classes = [BasicApiKeyAuthentication, ApiKeyAuthentication, SessionAuthentication]
    # ComfyUI's API is ComfyUI's to describe (README "Point your ComfyUI tools here"): it stays out of
    # the project's OpenAPI schema and the schema-driven tests.
    schema = None

    def initialize_request(self, request: Any, *args: Any, **kwargs: Any) -> Request:
        # The web editor's session: its CSRF check reads the form through DRF's parsers, which would
        # consume the body json_body reads. Read it first (a body too large is json_body's to refuse).
        try:
            request.body  # noqa: B018
        except RequestDataTooBig:
            pass
        return super().initialize_request(request, *args, **kwargs)


def json_body(request: Request, *, empty: Any = None) -> Any:
    """The body as JSON; `empty` when there is none. BodyRefused when it is not acceptable."""
    try:
        raw = request._request.body
    except RequestDataTooBig as exc:
        raise BodyRefused(f"the body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes") from exc
    if not raw.strip():
        return empty
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise BodyRefused("the body is not UTF-8 text") from exc
    except RecursionError as exc:
        raise BodyRefused(f"JSON nested deeper than {settings.JSON_MAX_DEPTH} levels") from exc
    except ValueError as exc:
        raise BodyRefused(f"the body is not JSON: {exc}") from exc
    problem = json_problem(value, max_depth=settings.JSON_MAX_DEPTH)
    if problem:
        raise BodyRefused(f"unacceptable JSON: {problem}")
    return value


def _no_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity; no JSON column (jsonb, SQLite's JSON_VALID) can store them.
    raise ValueError(f"{name} is not a JSON number")


def id_list(body: dict[str, Any], key: str, *, limit: int) -> list[str] | None:
    """`body[key]` as a list of at most `limit` prompt ids; None when absent. ValueError otherwise."""
    if key not in body:
        return None
    value = body[key]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"'{key}' must be a list of prompt ids")
    if len(value) > limit:
        raise ValueError(f"'{key}' names {len(value)} prompts; at most {limit} at once")
    return value
