"""A web process pays its one-time costs before it serves, not on some user's first request.

Measured in-process (POST /api/jobs/ on PostgreSQL, /tmp profile): a new process's first request
took 368 ms where the next ones took 33-36 ms. Django builds its URL resolver on first use, which
imports every view, serializer and schema module (231 ms), and the cache's Redis client imports
redis-py on first use (126 ms). Nothing here touches the network: a process whose database or
Redis is down still starts, and says so on its first request as before.
"""

from __future__ import annotations

import importlib

from django.urls import get_resolver


def warm_up() -> None:
    len(get_resolver().url_patterns)  # imports every URL pattern, so every view module
    # The cache's client and the channel layer's, on first use. Not the channel layer itself: made
    # at import, it kept the settings of that moment (tests and tools change them after).
    importlib.import_module("redis")
