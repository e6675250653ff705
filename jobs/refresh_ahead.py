"""Read again on a thread of its own: what a process keeps for a while (the ETA's history, a
backend's node catalog) is refreshed in the background once it is old, and the old value is served
meanwhile, so no request and no free GPU waits for the read.

Measured on 2026-12-06 (1 M jobs of history, `python -m devtools.benchmarks.dispatch`): each web
process and the GPU worker read the ETA's history again once a minute on whichever caller came first
(25-45 ms for the benchmark's three node classes, 40-115 ms for a Stable Diffusion graph's four), and
those calls were the POST's and the dispatch's p99: POST p50 21 ms, the reloads' POSTs 67-107 ms.

One thread per process does the refreshes, one after another, on one database connection: a
process that keeps many histories (one per set of node classes asked about) does not open a
connection for each when their minute is up together. It stops after IDLE_SECONDS with nothing to
do, closing its connection, and starts again at the next refresh asked for.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable
from functools import partial

from django.db import close_old_connections, connection

logger = logging.getLogger(__name__)

IDLE_SECONDS = 30.0

_lock = threading.Condition()
_queued: dict[Hashable, Callable[[], object]] = {}  # in the order asked, each key once
_running: Hashable | None = None
_thread: threading.Thread | None = None


def refresh_in_background(key: Hashable, refresh: Callable[[], object]) -> None:
    """Have the refresher run `refresh`, unless the one for `key` is waiting or running. A refresh
    that fails is logged; the caller keeps serving what it had and asks again at its next use."""
    global _thread
    with _lock:
        if key in _queued or key == _running:
            return
        _queued[key] = refresh
        if _thread is None or not _thread.is_alive():  # never started, stopped idle, or forked away
            _thread = threading.Thread(target=_serve, name="refresh-ahead", daemon=True)
            _thread.start()
        _lock.notify_all()


def _work_or_stopped(me: threading.Thread) -> bool:
    return bool(_queued) or _thread is not me


def _serve() -> None:
    global _running, _thread
    me = threading.current_thread()
    try:
        while True:
            with _lock:
                if _thread is not me:
                    return  # stopped (refresher_stop)
                _running = None
                _lock.notify_all()  # refreshes_wait
                if not _lock.wait_for(partial(_work_or_stopped, me), IDLE_SECONDS):
                    _thread = None  # idle: a refresh asked for from now on starts a thread of its own
                    return
                if _thread is not me:
                    return
                key = next(iter(_queued))
                refresh = _queued.pop(key)
                _running = key
            try:
                close_old_connections()  # past CONN_MAX_AGE, or broken by an earlier refresh
                refresh()
            except Exception:
                logger.warning("refreshing %s failed; what was read before is still served", key, exc_info=True)
    finally:
        with _lock:
            if _thread is me:  # ended by something unexpected: the next refresh starts another
                _running = _thread = None
            _lock.notify_all()
        connection.close()  # this thread's own


def refreshes_wait(timeout: float = 10.0) -> None:
    """Wait until no refresh waits or runs (tests, and a process about to stop)."""
    with _lock:
        _lock.wait_for(lambda: not _queued and _running is None, timeout)


def refresher_stop(timeout: float = 10.0) -> None:
    """Stop the refresher once its refresh in progress is done, closing its database connection
    (tests: a thread left with a connection to the test database would keep it from being dropped).
    What was still queued is dropped; the next use asks again."""
    global _thread, _running
    with _lock:
        thread, _thread = _thread, None
        _queued.clear()
        _lock.notify_all()
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout)
    with _lock:
        _running = None
