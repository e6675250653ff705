"""Time an in-process action over several runs and count its queries (for the benchmarks that call
services directly rather than through HTTP)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from django.db import connection
from django.test.utils import CaptureQueriesContext


def timed(
    action: Callable[[], Any], runs: int, *, before: Callable[[], Any] = lambda: None
) -> tuple[float, float, int]:
    """Median and p95 in milliseconds, and the queries of the last run, after one warm-up run.
    `before` runs ahead of each run, outside the timing (e.g. to empty a cache)."""
    before()
    action()  # warm-up
    times = []
    queries = 0
    for _ in range(runs):
        before()
        with CaptureQueriesContext(connection) as captured:
            start = time.perf_counter()
            action()
            times.append((time.perf_counter() - start) * 1000)
        queries = len(captured)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))], queries
