"""Generation statistics, read from the roll-ups (monitoring.rollups), never from the job table.

Percentiles come from the roll-ups' fixed-bucket histograms, interpolated inside a bucket: an
estimate good to a fraction of a bucket, which is what a dashboard needs at a million jobs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import zip_longest
from typing import Any, cast

from django.core.cache import cache
from django.db.models import Count, Max, Q, QuerySet, Sum
from django.utils import timezone

from jobs.models import JobStatus
from monitoring.models import JobRollup, NodeRollup, RollupPeriod
from monitoring.rollups import DURATION_EDGES, KNOWN_VALUES_KEY, histogram_totals

WINDOW_CHOICES = (1, 7, 30, 90)
DEFAULT_WINDOW_DAYS = 30
HOURLY_CHART_HOURS = 48
SLOWEST_NODES = 10


def histogram_percentile(histogram: Sequence[int], fraction: float, longest: float | None = None) -> float | None:
    """The value below which `fraction` of the counted durations fall, interpolated in its bucket.

    Interpolating inside a bucket can land above every duration really seen (a p95 of 13.2 s when
    the longest run took 11.8 s): with `longest` known, the answer never exceeds it.
    """
    value = _histogram_percentile(histogram, fraction)
    if value is None or longest is None:
        return value
    return min(value, longest)


def _histogram_percentile(histogram: Sequence[int], fraction: float) -> float | None:
    total = sum(histogram)
    if not total:
        return None
    rank = fraction * total
    seen = 0
    lows = (0.0, *DURATION_EDGES)
    for index, count in enumerate(histogram):
        if count and seen + count >= rank:
            low = lows[index]
            # The open last bucket has no upper edge: report its lower edge rather than invent one.
            high = DURATION_EDGES[index] if index < len(DURATION_EDGES) else low
            return low + (high - low) * (rank - seen) / count
        seen += count
    return float(DURATION_EDGES[-1])


@dataclass
class Tally:
    """Counts and duration histograms of one group of finished jobs (a job type, a backend, ...)."""

    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    wait_hist: list[int] = field(default_factory=list)
    run_hist: list[int] = field(default_factory=list)
    wait_max: float | None = None
    run_max: float | None = None

    def add_count(self, status: str, count: int) -> None:
        if status == JobStatus.COMPLETED:
            self.completed += count
        elif status == JobStatus.FAILED:
            self.failed += count
        else:
            self.cancelled += count

    def add_durations(self, durations: Mapping[str, Any]) -> None:
        """Histograms and longest durations already summed over roll-up rows (`_completed_durations`)."""
        self.wait_hist = _sum_lists(self.wait_hist, durations["wait_hist"])
        self.run_hist = _sum_lists(self.run_hist, durations["run_hist"])
        self.wait_max = _max_known(self.wait_max, durations["wait_max"])
        self.run_max = _max_known(self.run_max, durations["run_max"])

    def summary(self, hours: float) -> dict[str, Any]:
        count = self.completed + self.failed + self.cancelled
        decided = self.completed + self.failed
        return {
            "count": count,
            "completed": self.completed,
            "failed": self.failed,
            "cancelled": self.cancelled,
            # Cancelled jobs are someone's choice, not a failure of the system.
            "success_rate": round(self.completed / decided, 4) if decided else None,
            "wait_p50": _round(histogram_percentile(self.wait_hist, 0.50, self.wait_max)),
            "wait_p95": _round(histogram_percentile(self.wait_hist, 0.95, self.wait_max)),
            "run_p50": _round(histogram_percentile(self.run_hist, 0.50, self.run_max)),
            "run_p95": _round(histogram_percentile(self.run_hist, 0.95, self.run_max)),
            "per_hour": round(count / hours, 2),
            "per_day": round(count * 24 / hours, 1),
        }


def _sum_lists(total: Sequence[int], histogram: Sequence[int]) -> list[int]:
    return [a + b for a, b in zip_longest(total, histogram, fillvalue=0)]


def _max_known(known: float | None, seen: float | None) -> float | None:
    return seen if known is None else known if seen is None else max(known, seen)


def _longest(row: Mapping[str, Any], kind: str) -> float | None:
    """The longest duration over a group's rows; unknown (inf, no clamp) when a row with durations
    lacks it (roll-ups made before `*_max` existed), so no clamp rests on part of the data."""
    return float("inf") if row[f"{kind}_unknown"] else row[f"{kind}_longest"]


def _completed_durations(since: datetime) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (job type, backend): the wait and run histograms and longest durations of its completed
    jobs, summed in the database (durations of failures say little about how long work takes)."""
    rows = JobRollup.objects.filter(period=RollupPeriod.DAY, start__gte=since, status=JobStatus.COMPLETED)
    keys = ("job_type", "backend")
    wait_hists = histogram_totals(rows, "wait_hist", keys)
    run_hists = histogram_totals(rows, "run_hist", keys)
    longest = rows.values(*keys).annotate(
        wait_longest=Max("wait_max"),
        run_longest=Max("run_max"),
        wait_unknown=Count("pk", filter=Q(wait_max__isnull=True, wait_count__gt=0)),
        run_unknown=Count("pk", filter=Q(run_max__isnull=True, run_count__gt=0)),
    )
    return {
        (row["job_type"], row["backend"]): {
            "wait_hist": wait_hists.get((row["job_type"], row["backend"]), []),
            "run_hist": run_hists.get((row["job_type"], row["backend"]), []),
            "wait_max": _longest(row, "wait"),
            "run_max": _longest(row, "run"),
        }
        for row in longest.order_by()
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def window_start(days: int, now: datetime) -> datetime:
    """Midnight `days - 1` days ago: whole days, today included."""
    today = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days - 1)


def window_days(value: Any) -> int:
    try:
        days = int(value)
    except (TypeError, ValueError):
        return DEFAULT_WINDOW_DAYS
    return days if days in WINDOW_CHOICES else DEFAULT_WINDOW_DAYS


def _daily_rows(since: datetime) -> QuerySet[JobRollup]:
    return JobRollup.objects.filter(period=RollupPeriod.DAY, start__gte=since)


def _counts(since: datetime, *keys: str) -> Iterable[Mapping[str, Any]]:
    # Summed in the database: the failure categories and the days split the rows the counts don't need.
    return _daily_rows(since).values(*keys).annotate(n=Sum("count")).order_by()


def _hourly_throughput(now: datetime) -> list[dict[str, Any]]:
    first = timezone.localtime(now).replace(minute=0, second=0, microsecond=0) - timedelta(hours=HOURLY_CHART_HOURS - 1)
    counts: dict[datetime, dict[str, int]] = defaultdict(lambda: {"completed": 0, "failed": 0, "cancelled": 0})
    rows = JobRollup.objects.filter(period=RollupPeriod.HOUR, start__gte=first).values("start", "status")
    for row in rows.annotate(n=Sum("count")).order_by():
        counts[row["start"]][row["status"]] += row["n"]
    hours = [first + timedelta(hours=offset) for offset in range(HOURLY_CHART_HOURS)]
    return [{"hour": hour.isoformat(), "count": sum(counts[hour].values()), **counts[hour]} for hour in hours]


def _daily_throughput(day_counts: dict[datetime, dict[str, int]], since: datetime, days: int) -> list[dict[str, Any]]:
    series = []
    for offset in range(days):
        day = since + timedelta(days=offset)
        counts = day_counts.get(day, {})
        completed, failed, cancelled = (counts.get(s, 0) for s in ("completed", "failed", "cancelled"))
        series.append(
            {
                "day": day.date().isoformat(),
                "count": completed + failed + cancelled,
                "completed": completed,
                "failed": failed,
                "cancelled": cancelled,
            }
        )
    return series


def slowest_nodes(since: datetime, limit: int = SLOWEST_NODES) -> list[dict[str, Any]]:
    rows = NodeRollup.objects.filter(period=RollupPeriod.DAY, start__gte=since)
    hists = histogram_totals(rows, "duration_hist", ("class_type",))
    groups = rows.values("class_type").annotate(n=Sum("count"), total=Sum("duration_sum"), longest=Max("duration_max"))
    nodes = []
    for group in groups.order_by():
        hist = hists.get((group["class_type"],), [])
        nodes.append(
            {
                "class_type": group["class_type"],
                "count": group["n"],
                "mean": round(group["total"] / group["n"], 2) if group["n"] else None,
                "p50": _round(histogram_percentile(hist, 0.50, group["longest"])),
                "p95": _round(histogram_percentile(hist, 0.95, group["longest"])),
                "max": round(group["longest"] or 0.0, 1),
            }
        )
    nodes.sort(key=lambda node: node["mean"] or 0.0, reverse=True)
    return nodes[:limit]


def generation_stats(*, days: int = DEFAULT_WINDOW_DAYS, now: datetime | None = None) -> dict[str, Any]:
    """Per job type and per backend: counts, success rate, wait and run p50/p95, throughput."""
    now = now or timezone.now()
    since = window_start(days, now)
    hours = max((now - since).total_seconds() / 3600, 1.0)
    by_type: dict[str, Tally] = defaultdict(Tally)
    by_backend: dict[str, Tally] = defaultdict(Tally)
    overall = Tally()
    for row in _counts(since, "job_type", "backend", "status"):
        for tally in (by_type[row["job_type"]], by_backend[row["backend"]], overall):
            tally.add_count(row["status"], row["n"])
    day_counts: dict[datetime, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in _counts(since, "start", "status"):
        day_counts[row["start"]][row["status"]] += row["n"]
    for (job_type, backend), durations in _completed_durations(since).items():
        for tally in (by_type[job_type], by_backend[backend], overall):
            tally.add_durations(durations)
    return {
        "window_days": days,
        "since": since.isoformat(),
        "generated_at": now.isoformat(),
        "note": "finished jobs by finish time; durations of completed jobs; percentiles from histograms",
        "overall": overall.summary(hours),
        "by_job_type": [{"job_type": name, **tally.summary(hours)} for name, tally in sorted(by_type.items())],
        "by_backend": [{"backend": name, **tally.summary(hours)} for name, tally in sorted(by_backend.items())],
        "throughput_hourly": _hourly_throughput(now),
        "throughput_daily": _daily_throughput(day_counts, since, days),
        "slowest_nodes": slowest_nodes(since),
    }


KNOWN_VALUES_SECONDS = 300


def known_values(field_name: str) -> list[str]:
    """Backends or job types seen in the roll-ups (thousands of rows, not a million jobs).

    Cached for a few minutes: every job list page asks, and a new backend can wait that long.
    """

    def distinct() -> list[str]:
        values = JobRollup.objects.filter(period=RollupPeriod.DAY).values_list(field_name, flat=True)
        return sorted(set(values.distinct().order_by()))

    # The cache holds what distinct() returned; the stubs type a cached value as anything or None.
    return cast(list[str], cache.get_or_set(KNOWN_VALUES_KEY.format(field_name), distinct, KNOWN_VALUES_SECONDS))
