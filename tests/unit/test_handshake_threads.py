"""The websocket handshake threads (jobs/consumers.py): a connection that answered a moment ago is
not health-checked first, and one that died meanwhile (PostgreSQL restarted) fails no handshake:
the handshake runs again on a new connection."""

from __future__ import annotations

import asyncio
import logging

import pytest
from asgiref.sync import async_to_sync
from django.db import connection

from jobs import consumers
from tests.factories import JobFactory, api_key_for
from tests.unit.test_websocket import communicator, with_key

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="a server that drops connections: PostgreSQL"),
]


def handshake_states(job_id: str, key: str, sockets: int) -> list[str]:
    """Open `sockets` job sockets at once; the first message type each got (or its close code)."""

    async def one() -> str:
        ws = communicator(f"/ws/jobs/{job_id}/", with_key(key))
        connected, code = await ws.connect(timeout=10)
        if not connected:
            return f"refused {code}"
        message = await ws.receive_output(timeout=10)
        await ws.disconnect()
        return str(message.get("text", message))[:40] if message["type"] == "websocket.send" else str(message)

    async def all_of_them() -> list[str]:
        return list(await asyncio.gather(*(one() for _ in range(sockets))))

    return async_to_sync(all_of_them)()


def terminate_other_sessions() -> int:
    """What a PostgreSQL restart does to every connection but this test's own."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


def test_handshakes_right_after_their_connections_died_all_succeed(caplog, settings):
    settings.WS_CONNECTS_PER_MINUTE = 1000
    job = JobFactory.create()
    key = api_key_for(job.user)  # type: ignore[arg-type]
    sockets = consumers.HANDSHAKE_THREADS * 3

    warm = handshake_states(str(job.id), key, sockets)  # every handshake thread holds a connection
    assert all('"type": "snapshot"' in text for text in warm), warm
    assert terminate_other_sessions() >= 1

    with caplog.at_level(logging.INFO, logger="jobs.consumers"):
        after = handshake_states(str(job.id), key, sockets)  # within the second: no health check

    assert all('"type": "snapshot"' in text for text in after), after
    assert any("connection was gone" in record.getMessage() for record in caplog.records)
