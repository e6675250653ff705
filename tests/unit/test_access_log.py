"""The access log names every request and websocket by its path: no query string, so no ticket or
key from a URL, ever reaches it (daphne's own access log, which prints query strings, is off)."""

from __future__ import annotations

import logging

import pytest
from asgiref.sync import async_to_sync
from channels.testing import HttpCommunicator

from access.access_log import RedactUrlCredentials, uvicorn_argv, web_server_argv
from anime_production.asgi import application
from tests.factories import JobFactory, UserFactory, api_key_for
from tests.unit.test_websocket import communicator, with_key
from tests.unit.test_ws_tickets import connect, ticket_for

pytestmark = pytest.mark.django_db(transaction=True)


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "access.access_log"]


def test_http_requests_are_logged_without_their_query_string(caplog):
    caplog.set_level(logging.INFO, logger="access.access_log")
    user = UserFactory.create()
    JobFactory.create(user=user)
    key = api_key_for(user)
    headers = [(b"x-api-key", key.encode()), (b"host", b"localhost")]
    request = HttpCommunicator(application, "GET", "/api/jobs/?token=SECRET1&status=queued", headers=headers)
    assert async_to_sync(request.get_response)()["status"] == 200
    (line,) = access_lines(caplog)
    assert '"GET /api/jobs/" 200' in line
    assert "SECRET1" not in caplog.text and key not in caplog.text and "?" not in line


def test_websocket_connects_rejects_and_disconnects_are_logged_without_their_ticket(caplog):
    caplog.set_level(logging.INFO, logger="access.access_log")
    user = UserFactory.create()
    job = JobFactory.create(user=user)
    ticket = ticket_for(user)["ticket"]
    assert connect(f"/ws/jobs/{job.id}/?ticket={ticket}&after=0") == (True, "snapshot")
    assert connect(f"/ws/jobs/{job.id}/?ticket={ticket}")[0] is False
    lines = access_lines(caplog)
    assert any(f'"WSCONNECT /ws/jobs/{job.id}/"' in line for line in lines), lines
    assert any(f'"WSREJECT /ws/jobs/{job.id}/" 4401' in line for line in lines), lines
    assert any(f'"WSDISCONNECT /ws/jobs/{job.id}/"' in line for line in lines), lines
    assert ticket not in caplog.text


def test_a_header_key_never_reaches_the_log(caplog):
    caplog.set_level(logging.DEBUG)
    user = UserFactory.create()
    job = JobFactory.create(user=user)
    key = api_key_for(user)

    async def scenario() -> None:
        ws = communicator(f"/ws/jobs/{job.id}/", with_key(key))
        assert (await ws.connect())[0]
        await ws.disconnect()

    async_to_sync(scenario)()
    assert key not in caplog.text


def test_any_log_line_quoting_a_url_has_its_ticket_and_token_blanked():
    url = "/ws/jobs/?after=3&ticket=T0P&token=ap_x"
    record = logging.LogRecord("django.server", logging.INFO, __file__, 1, '"GET %s HTTP/1.1" 101', (url,), None)
    assert RedactUrlCredentials().filter(record)
    assert record.getMessage() == '"GET /ws/jobs/?after=3&ticket=[redacted]&token=[redacted] HTTP/1.1" 101'
    # The project's logging sends every record through it.
    handler_filters = [f for handler in logging.getLogger().handlers for f in handler.filters]
    assert any(isinstance(f, RedactUrlCredentials) for f in handler_filters)


def test_daphne_runs_without_its_own_access_log():
    argv = web_server_argv("127.0.0.1", 8000)
    assert argv[argv.index("--verbosity") + 1] == "0"


def test_uvicorn_runs_without_its_own_access_log_and_bounds_client_messages():
    """uvicorn's access log, like daphne's, prints query strings (websocket tickets)."""
    argv = uvicorn_argv("127.0.0.1", 8000, 2)
    assert "--no-access-log" in argv and argv[argv.index("--workers") + 1] == "2"
    assert int(argv[argv.index("--ws-max-size") + 1]) <= 65536
