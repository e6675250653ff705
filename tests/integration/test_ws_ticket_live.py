"""A websocket ticket through the real daphne, started as `make run` starts it: it opens one
connection, and neither it nor an API key sent in a URL appears anywhere in daphne's output."""

from __future__ import annotations

from typing import Any

import pytest
import requests
import websocket

from devtools.processes import Process, running_processes
from tests.conftest import wait_for
from tests.factories import JobFactory, UserFactory, api_key_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def daphne_process() -> Process:
    (daphne,) = [process for process in running_processes() if process.name == "daphne"]
    return daphne


def handshake(url: str, origin: str) -> str:
    """The first message's type, or why the handshake failed."""
    try:
        ws = websocket.create_connection(url, timeout=10, origin=origin)
    except websocket.WebSocketBadStatusException as exc:
        return f"refused {exc.status_code}"
    try:
        return str(ws.recv())[:40]
    finally:
        ws.close()


def test_a_ticket_opens_one_websocket_and_never_reaches_the_log(web_server: str) -> None:
    user = UserFactory.create()
    job = JobFactory.create(user=user)
    key = api_key_for(user)
    http = requests.Session()
    http.trust_env = False
    issued = http.post(f"{web_server}/api/ws-tickets/", headers={"X-API-Key": key}, timeout=30)
    assert issued.status_code == 201, issued.text
    ticket = issued.json()["ticket"]
    ws_base = web_server.replace("http://", "ws://")
    path = f"/ws/jobs/{job.id}/"

    first = handshake(f"{ws_base}{path}?after=0&ticket={ticket}", origin=web_server)
    again = handshake(f"{ws_base}{path}?ticket={ticket}", origin=web_server)
    in_the_url = handshake(f"{ws_base}{path}?token={key}", origin=web_server)
    assert first.startswith('{"type": "snapshot"'), first
    assert again == "refused 403", "a ticket opens one connection"
    assert in_the_url == "refused 403", "an API key in the URL is refused by default"
    # Query strings of plain requests never reach the log either (a cursor, a stray credential).
    assert http.get(f"{web_server}/api/jobs/?token={key}", timeout=30).status_code == 401

    daphne = daphne_process()
    wait_for(lambda: f'"WSREJECT {path}" 4401' in daphne.output(), timeout=10, message="the access log lines")
    output = daphne.output()
    assert f'"WSCONNECT {path}"' in output and '"GET /api/jobs/" 401' in output, "the access log is there"
    assert ticket not in output and key not in output
    assert "ticket=" not in output and "token=" not in output


def test_unknown_api_urls_and_unreadable_uploads_get_json_answers(web_server: str, user: Any) -> None:
    """What the schemathesis run found, through daphne: an id the URL patterns refuse was an HTML
    404 page, and a multipart body Twisted could not parse was a bare 400 that Django never saw."""
    http = requests.Session()
    http.trust_env = False
    headers = {"X-API-Key": api_key_for(user)}
    missing = http.get(f"{web_server}/api/jobs/0.5/attempts/", headers=headers, timeout=30)
    assert (missing.status_code, missing.headers["Content-Type"]) == (404, "application/json")
    assert "detail" in missing.json()
    empty = http.post(
        f"{web_server}/api/assets/",
        data=b"--b--\r\n",
        headers={**headers, "Content-Type": "multipart/form-data; boundary=b"},
        timeout=30,
    )
    assert empty.status_code == 400 and empty.json() == {"file": ["No file was submitted."]}
