"""The database down is answered "try again later" (access/database_unavailable.py); with a real
PostgreSQL stopped and started: tests/integration/test_database_faults.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError
from django.test import RequestFactory

from access.database_unavailable import (
    WS_TRY_AGAIN_LATER,
    DatabaseUnavailableMiddleware,
    DatabaseUnavailableWebsocket,
)


def middleware() -> DatabaseUnavailableMiddleware:
    return DatabaseUnavailableMiddleware(lambda request: None)


@pytest.mark.parametrize("error", [OperationalError("connection refused"), InterfaceError("connection already closed")])
def test_the_api_answers_503_with_retry_after_and_a_reason(error: Exception) -> None:
    response = middleware().process_exception(RequestFactory().post("/api/jobs/"), error)
    assert response is not None and response.status_code == 503
    assert int(response["Retry-After"]) > 0
    assert json.loads(response.content)["code"] == "database_unavailable"


def test_the_admin_answers_503_in_plain_text() -> None:
    response = middleware().process_exception(RequestFactory().get("/admin/jobs/job/"), OperationalError("down"))
    assert response is not None and response.status_code == 503
    assert response["Content-Type"].startswith("text/plain") and b"database is unavailable" in response.content


@pytest.mark.parametrize("error", [IntegrityError("duplicate key"), DatabaseError("syntax"), ValueError("bug")])
def test_other_errors_are_not_taken_for_an_outage(error: Exception) -> None:
    assert middleware().process_exception(RequestFactory().post("/api/jobs/"), error) is None


def handshake(inner: Any, extensions: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/ws/jobs/", "extensions": extensions}
    async_to_sync(DatabaseUnavailableWebsocket(inner))(scope, receive, send)
    return sent


async def lookup_fails(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()
    raise OperationalError("connection refused")  # the key's lookup, before any answer


async def fails_after_accept(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "websocket.accept"})
    raise OperationalError("server closed the connection unexpectedly")  # the snapshot's query


def test_a_handshake_is_answered_503_where_the_server_lets_the_application_choose() -> None:
    sent = handshake(lookup_fails, {"websocket.http.response": {}})
    start, body = sent
    assert start["type"] == "websocket.http.response.start" and start["status"] == 503
    assert (b"retry-after", b"5") in start["headers"]
    assert b"database is unavailable" in body["body"]


def test_a_handshake_is_accepted_and_closed_try_again_later_elsewhere() -> None:
    assert handshake(lookup_fails, {}) == [
        {"type": "websocket.accept"},
        {"type": "websocket.close", "code": WS_TRY_AGAIN_LATER, "reason": "database unavailable"},
    ]
    assert handshake(fails_after_accept, {"websocket.http.response": {}}) == [
        {"type": "websocket.accept"},
        {"type": "websocket.close", "code": WS_TRY_AGAIN_LATER, "reason": "database unavailable"},
    ]


def test_other_errors_still_propagate() -> None:
    async def broken(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        handshake(broken, {})
