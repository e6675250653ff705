"""What can go wrong, as exceptions whose `str()` is one line a person can act on.

Every error the client raises is an `AnimeClientError`. Those from an HTTP answer are `ApiError`s
and carry the status and the reason the server gave; the command line turns each kind into one
line on stderr and an exit code (anime_client.cli).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from anime_client.terminal_text import one_line

REASON_MAX_CHARS = 600


class AnimeClientError(Exception):
    """Anything the client refuses or cannot do; the message is one line."""


class WorkflowError(AnimeClientError):
    """The workflow file or an `--input` is unusable: found before any request is sent."""


class DownloadRefused(AnimeClientError):
    """An output's file name could escape the download folder, or would overwrite a file."""


class WaitTimeout(AnimeClientError, TimeoutError):
    """The job did not finish within the time given to `Client.wait`."""


class ServerUnreachable(AnimeClientError):
    """Nothing answered at the base URL (refused, timed out, DNS, TLS)."""


class ApiError(AnimeClientError):
    """The server answered with an error status."""

    def __init__(self, message: str, *, status: int, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class BadRequest(ApiError):
    """400 (and other 4xx without a kind of their own): the server said what was wrong."""


class AuthenticationFailed(ApiError):
    """401: no key, or an unknown, expired or revoked one."""


class PermissionDenied(ApiError):
    """403: the key is good, but its user may not do this."""


class NotFound(ApiError):
    """404: no such job or output, or one the key's user may not see."""


class Conflict(ApiError):
    """409: the job is not in a state that allows this (cancel a finished job, retry a running one)."""


class RateLimited(ApiError):
    """429: too many requests; `retry_after` is in seconds, when the server said."""

    def __init__(self, message: str, *, status: int, reason: str, retry_after: float | None) -> None:
        super().__init__(message, status=status, reason=reason)
        self.retry_after = retry_after


class ServerError(ApiError):
    """5xx, or an answer that is not what the API sends."""


def error_for_response(response: requests.Response, what: str) -> ApiError:
    """The error an HTTP error answer stands for; `what` names the request ("GET /api/jobs/")."""
    status = response.status_code
    reason = response_reason(response)
    said = f": {reason}" if reason else ""
    if status == 401:
        return AuthenticationFailed(
            f"{what}: the server refused the API key (401){said}; check --api-key or ANIME_API_KEY",
            status=status,
            reason=reason,
        )
    if status == 403:
        return PermissionDenied(f"{what}: not allowed (403){said}", status=status, reason=reason)
    if status == 404:
        return NotFound(f"{what}: not found (404){said}", status=status, reason=reason)
    if status == 409:
        return Conflict(f"{what}: refused (409){said}", status=status, reason=reason)
    if status == 429:
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        when = f"retry in {retry_after:.0f} s" if retry_after is not None else "retry later"
        return RateLimited(
            f"{what}: too many requests (429); {when}{said}", status=status, reason=reason, retry_after=retry_after
        )
    if status >= 500:
        return ServerError(f"{what}: the server failed ({status}){said}", status=status, reason=reason)
    return BadRequest(f"{what}: the server refused the request ({status}){said}", status=status, reason=reason)


def response_reason(response: requests.Response) -> str:
    """The reason in an error answer, as one line: DRF's `detail`, or every field's messages."""
    content_type = response.headers.get("Content-Type", "")
    if "json" not in content_type:
        # A framework's HTML error page (a proxy's 502, Django's 404 for an address it lacks) says
        # nothing a person needs on one line.
        return "" if "html" in content_type else one_line(response.text, REASON_MAX_CHARS)
    try:
        body = response.json()
    except (ValueError, json.JSONDecodeError):
        return ""
    return one_line(flatten_reason(body), REASON_MAX_CHARS)


def flatten_reason(body: Any, prefix: str = "") -> str:
    """DRF's error shapes ({"detail": ...}, {"field": ["..."]}, nested lists and objects) as text."""
    if isinstance(body, dict):
        if set(body) == {"detail"}:
            return flatten_reason(body["detail"], prefix)
        parts = []
        for key, value in body.items():
            label = str(key) if key not in ("detail", "non_field_errors") else ""
            inner = flatten_reason(value, f"{prefix}.{label}" if prefix and label else prefix or label)
            parts.append(inner)
        return "; ".join(part for part in parts if part)
    if isinstance(body, list):
        return "; ".join(part for part in (flatten_reason(item, prefix) for item in body) if part)
    text = str(body).strip()
    return f"{prefix}: {text}" if prefix and text else text


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds from now: delta-seconds, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
