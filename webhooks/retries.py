"""When a failed delivery is tried again: exponential backoff, for a bounded time (pure)."""

from __future__ import annotations

from datetime import datetime, timedelta


def retry_delay(attempt: int, *, base: float, ceiling: float) -> float:
    """Seconds to wait after the `attempt`-th failed attempt (1-based): base, 2×base, 4×base, ...
    up to `ceiling`."""
    return float(min(base * 2 ** (attempt - 1), ceiling))


def next_attempt_at(
    attempt: int, *, first_at: datetime, now: datetime, base: float, ceiling: float, retry_for: float
) -> datetime | None:
    """When to try again after the `attempt`-th failure, or None once that would fall later than
    `retry_for` seconds after the first attempt (the message is then given up)."""
    due = now + timedelta(seconds=retry_delay(attempt, base=base, ceiling=ceiling))
    return due if due <= first_at + timedelta(seconds=retry_for) else None


def retry_schedule(*, base: float, ceiling: float, retry_for: float) -> list[float]:
    """The delays a message that always fails goes through (ignoring the attempts' own durations)."""
    delays: list[float] = []
    elapsed = 0.0
    while True:
        delay = retry_delay(len(delays) + 1, base=base, ceiling=ceiling)
        if elapsed + delay > retry_for:
            return delays
        delays.append(delay)
        elapsed += delay
