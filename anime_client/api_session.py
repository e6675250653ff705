"""HTTP to the server's public API: the base URL, the API key header, and every failure turned into
one of anime_client.errors (never a requests exception, never a traceback for the caller to read)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests

from anime_client.errors import ServerError, ServerUnreachable, error_for_response

DEFAULT_TIMEOUT = 30.0
USER_AGENT = "anime-jobs (anime_client)"
_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


class ApiSession:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        session: requests.Session | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        parts = urlsplit(base_url.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ServerUnreachable(f"not a server address: {base_url!r} (expected http://host:port or https://...)")
        self.base_url = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + "/", "", ""))
        self.api_key = api_key
        self.timeout = timeout
        self.http = session or requests.Session()
        self.http.headers.update({"X-API-Key": api_key, "User-Agent": USER_AGENT, "Accept": "application/json"})

    def url(self, path: str) -> str:
        """An API path ("api/jobs/") under the base URL; a path from the server ("/api/jobs/1/outputs/2/")
        or a full URL as it is, resolved against the base."""
        return urljoin(self.base_url, path)

    def websocket_url(self, path: str) -> str:
        parts = urlsplit(self.url(path))
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))

    def request(self, method: str, path: str, *, what: str | None = None, **kwargs: Any) -> requests.Response:
        """The answer to a request; an error status raises the matching ApiError."""
        what = what or f"{method} {urlsplit(self.url(path)).path}"
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self.http.request(method, self.url(path), **kwargs)
        except requests.Timeout as exc:
            raise ServerUnreachable(f"{what}: no answer from {self.base_url} within {self.timeout:g} s") from exc
        except requests.RequestException as exc:
            raise ServerUnreachable(f"{what}: cannot reach the server at {self.base_url} ({_why(exc)})") from exc
        if response.status_code >= 400:
            raise error_for_response(response, what)
        return response

    def json(self, method: str, path: str, *, what: str | None = None, **kwargs: Any) -> Any:
        response = self.request(method, path, what=what, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise ServerError(
                f"{what or method + ' ' + path}: the answer is not JSON; is {self.base_url} the jobs server?",
                status=response.status_code,
                reason="",
            ) from exc


def _why(exc: requests.RequestException) -> str:
    """What went wrong under requests' and urllib3's wrapping, e.g. "Connection refused"."""
    found = _ERRNO_TEXT.search(str(exc))
    if found:
        return found.group(1).strip()
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS failed"
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema):
        return "invalid URL"
    return type(exc).__name__
