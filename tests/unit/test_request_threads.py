"""A web process runs its requests' sync code on a few kept threads (access/request_threads.py), so
each keeps its database connection; Django alone starts a thread, and so a connection, per request."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import HttpCommunicator
from django.core.asgi import get_asgi_application
from django.core.signals import request_started
from django.db import connection, connections

from access.kept_connections import kept_connections_close
from access.request_threads import RequestThreads
from jobs.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


def threads_serving(app: Any, requests: int) -> list[str]:
    """The name of the thread each request's sync code ran on (Django's request_started runs there)."""
    seen: list[str] = []

    def record(**_: Any) -> None:
        seen.append(threading.current_thread().name)

    request_started.connect(record)
    try:
        for _ in range(requests):
            communicator = HttpCommunicator(app, "GET", "/api/", headers=[(b"host", b"localhost")])
            response = async_to_sync(communicator.get_response)()
            assert response["status"] == 401  # no credentials: refused by the views, in sync code
    finally:
        request_started.disconnect(record)
    return seen


def test_requests_run_on_the_kept_threads() -> None:
    seen = threads_serving(RequestThreads(get_asgi_application(), threads=2), 12)

    assert len(seen) == 12
    assert all(name.startswith("request-") for name in seen), seen
    assert len(set(seen)) <= 2


def test_django_alone_starts_a_thread_per_request() -> None:
    # What RequestThreads is for: each of these threads would open a database connection of its own.
    seen = threads_serving(get_asgi_application(), 6)

    assert len(set(seen)) == 6


def test_requests_in_flight_go_to_the_least_busy_thread() -> None:
    app = RequestThreads(get_asgi_application(), threads=3)
    app.in_flight[:] = [2, 0, 1]  # as if three requests were in flight

    seen = threads_serving(app, 1)

    assert seen == ["request-1_0"]


def test_the_connections_the_threads_keep_are_closed_from_outside_them() -> None:
    # What a web process's lifespan shutdown and the end of a test session do (access.kept_connections):
    # left open, PostgreSQL would not drop the test database ("being accessed by other users").
    app = RequestThreads(get_asgi_application(), threads=2)

    def query_and_wrapper() -> Any:
        Job.objects.count()
        return connections["default"]

    kept = [executor.submit(query_and_wrapper).result() for executor in app.executors]
    assert all(wrapper.connection is not None for wrapper in kept)
    pids = [wrapper.connection.info.backend_pid for wrapper in kept] if connection.vendor == "postgresql" else []

    kept_connections_close()

    assert all(wrapper.connection is None for wrapper in kept)
    assert sessions_ended(pids)  # PostgreSQL saw them end
    # A thread that serves again opens a new connection.
    assert app.executors[0].submit(Job.objects.count).result() == 0


def sessions_ended(pids: list[int], *, within: float = 5.0) -> bool:
    """Whether none of `pids` is a session of the test database any more, waiting up to `within` s:
    a server process leaves pg_stat_activity shortly after its client closed, not at once (CI saw
    one still listed right after the close)."""
    deadline = time.monotonic() + within
    while set(pids) & set(sessions_of_this_database()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def sessions_of_this_database() -> list[int]:
    """PostgreSQL's sessions on the test database (their server pids); none on SQLite."""
    if connection.vendor != "postgresql":
        return []
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        return [row[0] for row in cursor.fetchall()]
