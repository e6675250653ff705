"""Read again on a thread of its own: what a process keeps for a while (the ETA's history, a
backend's node catalog) is refreshed in the background once it is old, and the old value is served
meanwhile, so no request and no free GPU waits for the read.

Measured on 2026-12-06 (1 M jobs of history, `python -m devtools.benchmarks.dispatch`): each web
process and the GPU worker read the ETA's history again once a minute on whichever caller came first
(25-45 ms for the benchmark's three node classes, 40-115 ms for a Stable Diffusion graph's four), and
those calls were the POST's and the dispatch's p99: POST p50 21 ms, the reloads' POSTs 67-107 ms.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable

from django.db import connection

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_running: dict[Hashable, threading.Thread] = {}


def refresh_in_background(key: Hashable, refresh: Callable[[], object]) -> None:
    """Run `refresh` on a thread of its own, unless the one for `key` still runs. A refresh that
    fails is logged; the caller keeps serving what it had and asks again at its next use."""
    with _lock:
        if key in _running:
            return
        thread = threading.Thread(target=_run, args=(key, refresh), name=f"refresh-{key}"[:60], daemon=True)
        _running[key] = thread
    thread.start()


def _run(key: Hashable, refresh: Callable[[], object]) -> None:
    try:
        refresh()
    except Exception:
        logger.warning("refreshing %s failed; what was read before is still served", key, exc_info=True)
    finally:
        connection.close()  # this thread's own, if it opened one
        with _lock:
            _running.pop(key, None)


def refreshes_wait(timeout: float = 10.0) -> None:
    """Wait for the refreshes running now (tests, and a process that stops)."""
    with _lock:
        threads = list(_running.values())
    for thread in threads:
        thread.join(timeout)
