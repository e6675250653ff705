"""Failure analysis: which categories, when, where, and with which error messages; from the roll-ups."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Sum
from django.utils import timezone

from jobs.models import FailureCategory, JobStatus
from monitoring.models import ErrorMessageRollup, JobRollup, RollupPeriod
from monitoring.stats import DEFAULT_WINDOW_DAYS, window_start

TOP_MESSAGES = 15


def _category_label(category: str) -> str:
    try:
        return FailureCategory(category).label
    except ValueError:
        return category or "(none)"


def _rollup_sums(since: datetime, *keys: str, failed_only: bool = False) -> list[dict[str, Any]]:
    """Daily roll-up counts summed by `keys` in the database: a few dozen rows back, not thousands."""
    rows = JobRollup.objects.filter(period=RollupPeriod.DAY, start__gte=since)
    if failed_only:
        rows = rows.filter(status=JobStatus.FAILED)
    return list(rows.values(*keys).annotate(n=Sum("count")).order_by())


def _matrix(since: datetime, key: str, categories: list[str]) -> list[dict[str, Any]]:
    """One line per `key` value (backend, job type): its failures per category, and its total."""
    cells: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    finished: dict[str, int] = defaultdict(int)
    for row in _rollup_sums(since, key, "status", "failure_category"):
        finished[row[key]] += row["n"]
        if row["status"] == JobStatus.FAILED:
            cells[row[key]][row["failure_category"]] += row["n"]
    return [
        {
            key: name,
            "finished": finished[name],
            "failed": sum(cells[name].values()),
            "failure_rate": round(sum(cells[name].values()) / finished[name], 4) if finished[name] else None,
            "counts": [cells[name].get(category, 0) for category in categories],
        }
        for name in sorted(finished)
    ]


def failure_stats(*, days: int = DEFAULT_WINDOW_DAYS, now: datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    since = window_start(days, now)
    totals: dict[str, int] = defaultdict(int)
    per_day: dict[datetime, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in _rollup_sums(since, "start", "failure_category", failed_only=True):
        totals[row["failure_category"]] += row["n"]
        per_day[row["start"]][row["failure_category"]] += row["n"]
    categories = sorted(totals, key=lambda category: -totals[category])
    days_list = [since + timedelta(days=offset) for offset in range(days)]
    by_backend = _matrix(since, "backend", categories)
    return {
        "window_days": days,
        "since": since,
        "until": now,
        "finished": sum(row["finished"] for row in by_backend),
        "failed": sum(totals.values()),
        "categories": [
            {"category": category, "label": _category_label(category), "count": totals[category]}
            for category in categories
        ],
        "per_day": [
            {
                "day": day,
                "next_day": day + timedelta(days=1),
                "counts": [per_day[day].get(c, 0) for c in categories],
                "total": sum(per_day[day].values()),
            }
            for day in days_list
        ],
        "by_backend": by_backend,
        "by_job_type": _matrix(since, "job_type", categories),
        "top_messages": top_error_messages(since),
    }


def failure_category_counts(*, days: int = DEFAULT_WINDOW_DAYS, now: datetime | None = None) -> list[dict[str, Any]]:
    """Failed jobs per category in the window, most frequent first (what /api/stats/ adds to the
    generation statistics)."""
    since = window_start(days, now or timezone.now())
    counts = {row["failure_category"]: row["n"] for row in _rollup_sums(since, "failure_category", failed_only=True)}
    ordered = sorted(counts, key=lambda category: (-counts[category], category))
    return [{"category": c, "label": _category_label(c), "count": counts[c]} for c in ordered]


def top_error_messages(since: datetime, limit: int = TOP_MESSAGES) -> list[dict[str, Any]]:
    rows = (
        ErrorMessageRollup.objects.filter(day__gte=since)
        .values("failure_category", "message")
        .annotate(n=Sum("count"))
        .order_by("-n", "failure_category", "message")[:limit]
    )
    return [
        {
            "category": row["failure_category"],
            "label": _category_label(row["failure_category"]),
            "message": row["message"],
            "count": row["n"],
        }
        for row in rows
    ]
