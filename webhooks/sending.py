"""One HTTP POST of a webhook message: plain Python, no Django.

The connection goes to the address webhooks.addresses checked (never a second DNS lookup), while
the request names the URL's own host: the Host header, TLS SNI and the certificate check. Nothing
from the environment applies (no proxy), no redirect is followed (a 3xx is an answer like any
other), both the connect and each read have a timeout, and at most `max_response_bytes` of the
answer are read. The whole attempt is bounded again by its Celery task's time limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import certifi
import urllib3

from webhooks.addresses import Target

USER_AGENT = "anime-production-webhooks/1"


@dataclass(frozen=True)
class Sent:
    """What one attempt got: a status code, or the error that stopped it."""

    status_code: int | None
    duration_ms: int
    error: str = ""
    response_excerpt: str = ""

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def webhook_post(
    target: Target,
    body: bytes,
    headers: dict[str, str],
    *,
    connect_timeout: float,
    read_timeout: float,
    max_response_bytes: int,
) -> Sent:
    started = time.monotonic()
    pool = _pool(target, urllib3.Timeout(connect=connect_timeout, read=read_timeout))
    request_headers = {**headers, "host": target.host_header, "user-agent": USER_AGENT, "connection": "close"}
    try:
        response = pool.urlopen(
            "POST",
            target.path,
            body=body,
            headers=request_headers,
            redirect=False,
            retries=False,
            assert_same_host=False,
            preload_content=False,
            decode_content=False,
        )
        try:
            excerpt = response.read(max_response_bytes, decode_content=False)
        finally:
            response.release_conn()
    except Exception as exc:  # refused, timed out, TLS, the task's time limit: recorded, never raised
        return Sent(None, _ms_since(started), error=_error_text(exc))
    finally:
        pool.close()
    return Sent(response.status, _ms_since(started), response_excerpt=_text(excerpt))


def _pool(target: Target, timeout: urllib3.Timeout) -> urllib3.HTTPConnectionPool:
    if target.scheme == "https":
        return urllib3.HTTPSConnectionPool(
            target.address,
            target.port,
            timeout=timeout,
            maxsize=1,
            retries=False,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
            server_hostname=target.host,
            assert_hostname=target.host,
        )
    return urllib3.HTTPConnectionPool(target.address, target.port, timeout=timeout, maxsize=1, retries=False)


def _text(raw: bytes) -> str:
    # PostgreSQL text columns refuse NUL (docs/HAZARDS.md); a receiver may answer anything.
    return raw.decode("utf-8", "replace").replace("\x00", "")


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _error_text(exc: BaseException) -> str:
    """The innermost reason ("Connection refused", "Read timed out"), as one short line."""
    reason = getattr(exc, "reason", None) or exc
    text = f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
    return " ".join(text.split())[:500]
