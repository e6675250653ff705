"""The database connections a web process's own threads keep between calls (its request threads,
its websocket handshake threads), closed from outside those threads when they are done with.

Each such thread keeps its connection, as a Celery worker does (access/request_threads.py): nothing
closes it until the process ends. Then PostgreSQL sees the connections drop, and a test session that
served requests through the ASGI application found its test database held by them: "database ... is
being accessed by other users" at teardown, and the database left behind. `kept_connections_close`
closes them: at a web process's lifespan shutdown (anime_production/lifespan.py) and at the end of
a test session (tests/conftest.py), when none of those threads is in a call.
"""

from __future__ import annotations

import threading

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

_lock = threading.Lock()
_kept: list[BaseDatabaseWrapper] = []


def thread_started() -> None:
    """A pool's `initializer`: this thread's connection objects (one per database alias; a
    connection is opened only at its first query) become closable from outside."""
    wrappers = connections.all()
    with _lock:
        _kept.extend(wrappers)


def kept_connections_close() -> None:
    """Close every kept thread's open connection, from this thread (Django's thread-sharing count
    allows it for the call). Only while none of them is in a call: at shutdown, at a test session's end.
    A thread that runs again afterwards opens a new connection."""
    with _lock:
        wrappers = list(_kept)
    for wrapper in wrappers:
        if wrapper.connection is None:
            continue
        wrapper.inc_thread_sharing()
        try:
            wrapper.close()
        finally:
            wrapper.dec_thread_sharing()
