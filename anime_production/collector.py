"""The garbage collector of the web processes and the workers: start-up objects frozen; in the web
process, set for thousands of long-lived sockets.

Each open websocket is ~200 objects that live as long as it does (2,000 sockets: ~400,000, beside
~140,000 of Django's own after start-up). With CPython's default thresholds (700, 10, 10), the
objects of messages in flight at 30,000 messages/s were promoted to the oldest generation many
times a second, and every time it grew by a quarter a full collection walked all of it: during a
storm of 2,000 connects and the fan-out that followed, nine full collections of 49-214 ms each (the
event loop stopped for as long), the longest of them inside the latency benchmark's p99.

- `gc.freeze()` after start-up: what Django, DRF and the URL conf made is never walked again.
- The Celery workers freeze theirs, in the main process before the pool forks
  (anime_production/celery.py), as the gc module's documentation advises for servers that fork: a
  GPU worker's pool process walked ~195,000 objects in each full collection, 72-91 ms on the
  tracker's thread, and 16,000 with them frozen, 5-9 ms (a hook in the worker, 2026-12-07).
- A first threshold of 10,000 allocations: a message's objects are nearly always freed by their
  reference counts before a young collection sees them, so few are promoted (one full collection in
  the same run instead of nine, and the storm connected in 9.5 s instead of 10.4-10.8 s:
  devtools/benchmarks/fanout.py, uvicorn x1, four runs). A young collection of 10,000 objects
  takes about a millisecond.

Cycles are still collected; only the frozen start-up objects are left alone for good.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000
MIDDLE_THRESHOLD = 10
OLD_THRESHOLD = 10


def startup_objects_frozen() -> None:
    """What the process loaded to start is left alone by the cyclic collector from now on."""
    gc.collect()
    gc.freeze()


def web_process_collector() -> None:
    """Called once, when the ASGI application has been built (anime_production/asgi.py)."""
    startup_objects_frozen()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
