"""Roll-ups of finished jobs, node timings and error messages, kept current by a beat task.

The statistics and failure pages read these tables, never a million jobs. A refresh recomputes
whole hours and days (delete + insert), so it is idempotent: running it twice, or over a period
that was already done, changes nothing. It starts a little before the last refresh, because a job's
`finished_at` is stamped just before its transaction commits.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Count, FloatField, Func, Max, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, Left, Trunc
from django.db.models.sql.compiler import SQLCompiler
from django.utils import timezone

from jobs.models import FINAL_STATUSES, Job, JobStatus, NodeTiming
from monitoring.models import ErrorMessageRollup, JobRollup, NodeRollup, RollupPeriod, RollupState

logger = logging.getLogger(__name__)

# Upper edges (seconds) of the duration histogram buckets; one more bucket holds everything longer.
# Fine below a second (node timings), for image jobs (30-60 s) and in 2-minute steps for 8-40 min videos.
DURATION_EDGES: tuple[float, ...] = (
    0.1,
    0.25,
    0.5,
    1,
    2,
    3,
    5,
    7.5,
    10,
    15,
    20,
    25,
    30,
    35,
    40,
    45,
    50,
    55,
    60,
    70,
    80,
    90,
    105,
    120,
    150,
    180,
    240,
    300,
    360,
    420,
    480,
    540,
    600,
    720,
    840,
    960,
    1080,
    1200,
    1320,
    1440,
    1560,
    1680,
    1800,
    1920,
    2040,
    2160,
    2280,
    2400,
    2700,
    3000,
    3600,
    5400,
    7200,
)
# A job's finished_at is stamped before its transaction commits: look back this far for late commits.
LATE_COMMIT_SLACK = timedelta(minutes=10)
STATE_NAME = "stats"
MESSAGE_CHARS = 500
# The job list's backend and job type filters cache what the roll-ups know (monitoring.stats.known_values).
KNOWN_VALUES_KEY = "monitoring:known:{}"


@dataclass(frozen=True)
class RefreshResult:
    since: datetime | None
    until: datetime
    job_rows: int
    node_rows: int
    message_rows: int


class SecondsBetween(Func):
    """`end - start` in seconds, as a float, computed natively by each database.

    Django's own datetime subtraction runs a Python function per row on SQLite; with a filtered
    count per histogram bucket that made a roll-up of 20k jobs take 40 s.
    """

    output_field = FloatField()
    arity = 2
    # PostgreSQL (and any other database but SQLite): `Func.as_sql` reads these.
    template = "EXTRACT(EPOCH FROM (%(expressions)s))"
    arg_joiner = " - "

    def as_sqlite(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra_context: Any
    ) -> tuple[str, tuple[str | int, ...]]:
        return super().as_sql(
            compiler,
            connection,
            template="((julianday(%(expressions)s)) * 86400.0)",
            arg_joiner=") - julianday(",
            **extra_context,
        )


def _histogram_counts(alias: str, prefix: str) -> dict[str, Count]:
    """One filtered COUNT per bucket: the database fills the histogram in the same scan."""
    bounds: list[float | None] = [None, *DURATION_EDGES, None]
    counts = {}
    for index, (low, high) in enumerate(pairwise(bounds)):
        condition = Q(**{f"{alias}__isnull": False})
        if low is not None:
            condition &= Q(**{f"{alias}__gte": low})
        if high is not None:
            condition &= Q(**{f"{alias}__lt": high})
        counts[f"{prefix}{index}"] = Count("pk", filter=condition)
    return counts


def _histogram_from(row: Mapping[str, Any], prefix: str) -> list[int]:
    return [row[f"{prefix}{index}"] for index in range(len(DURATION_EDGES) + 1)]


def _finished_jobs(start: datetime | None, end: datetime | None) -> QuerySet[Job]:
    jobs = Job.objects.filter(status__in=FINAL_STATUSES, finished_at__isnull=False)
    if start is not None:
        jobs = jobs.filter(finished_at__gte=start)
    if end is not None:
        jobs = jobs.filter(finished_at__lt=end)
    return jobs.order_by()


def job_rollup_rows(period: str, start: datetime | None, end: datetime | None) -> list[JobRollup]:
    """Aggregate the jobs that finished in [start, end) into one row per cell of `period`."""
    wait = SecondsBetween(Coalesce("submitted_at", "started_at"), "created_at")
    run = SecondsBetween("finished_at", "started_at")
    rows = (
        _finished_jobs(start, end)
        .alias(wait=wait, run=run)
        .annotate(bucket=Trunc("finished_at", period))
        .values("bucket", "job_type", "backend", "status", "failure_category")
        .annotate(
            n=Count("pk"),
            wait_n=Count("pk", filter=Q(wait__isnull=False)),
            wait_total=Sum("wait"),
            run_n=Count("pk", filter=Q(run__isnull=False)),
            run_total=Sum("run"),
            wait_longest=Max("wait"),
            run_longest=Max("run"),
            **_histogram_counts("wait", "w"),
            **_histogram_counts("run", "r"),
        )
    )
    return [
        JobRollup(
            period=period,
            start=row["bucket"],
            job_type=row["job_type"],
            backend=row["backend"],
            status=row["status"],
            failure_category=row["failure_category"],
            count=row["n"],
            wait_count=row["wait_n"],
            wait_sum=row["wait_total"] or 0.0,
            wait_hist=_histogram_from(row, "w"),
            run_count=row["run_n"],
            run_sum=row["run_total"] or 0.0,
            run_hist=_histogram_from(row, "r"),
            wait_max=row["wait_longest"],
            run_max=row["run_longest"],
        )
        for row in rows
    ]


def node_rollup_rows(period: str, start: datetime | None, end: datetime | None) -> list[NodeRollup]:
    timings = NodeTiming.objects.order_by()
    if start is not None:
        timings = timings.filter(finished_at__gte=start)
    if end is not None:
        timings = timings.filter(finished_at__lt=end)
    rows = (
        timings.annotate(bucket=Trunc("finished_at", period))
        .values("bucket", "class_type", "backend")
        .annotate(
            n=Count("pk"),
            total=Sum("duration"),
            longest=Max("duration"),
            **_histogram_counts("duration", "d"),
        )
    )
    return [
        NodeRollup(
            period=period,
            start=row["bucket"],
            class_type=row["class_type"],
            backend=row["backend"],
            count=row["n"],
            duration_sum=row["total"] or 0.0,
            duration_max=row["longest"] or 0.0,
            duration_hist=_histogram_from(row, "d"),
        )
        for row in rows
    ]


def error_message_rows(start: datetime | None, end: datetime | None) -> list[ErrorMessageRollup]:
    rows = (
        _finished_jobs(start, end)
        .filter(status=JobStatus.FAILED)
        .annotate(day=Trunc("finished_at", "day"), message=Left("error_message", MESSAGE_CHARS))
        .values("day", "failure_category", "backend", "job_type", "message")
        .annotate(n=Count("pk"))
    )
    return [
        ErrorMessageRollup(
            day=row["day"],
            failure_category=row["failure_category"],
            backend=row["backend"],
            job_type=row["job_type"],
            message=row["message"] or "",
            count=row["n"],
        )
        for row in rows
    ]


def _floor(moment: datetime, period: str) -> datetime:
    moment = moment.astimezone(timezone.get_current_timezone())
    moment = moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if period == RollupPeriod.DAY else moment


def _replace(model: Any, rows: Iterable[Any], field: str, start: datetime | None, **filters: Any) -> int:
    stale = model.objects.filter(**filters)
    if start is not None:
        stale = stale.filter(**{f"{field}__gte": start})
    stale.delete()
    created = model.objects.bulk_create(list(rows), batch_size=2000)
    return len(created)


def stats_rollup_refresh(*, rebuild: bool = False, now: datetime | None = None) -> RefreshResult:
    """Recompute the hours and days touched since the last refresh (everything on `rebuild`)."""
    now = now or timezone.now()
    with transaction.atomic():
        # The row lock serialises concurrent refreshes (two beat schedulers, a rebuild by hand).
        state, _ = RollupState.objects.select_for_update().get_or_create(name=STATE_NAME)
        since = None if rebuild or state.refreshed_until is None else state.refreshed_until - LATE_COMMIT_SLACK
        job_rows = node_rows = 0
        for period in (RollupPeriod.HOUR, RollupPeriod.DAY):
            start = None if since is None else _floor(since, period)
            job_rows += _replace(JobRollup, job_rollup_rows(period, start, None), "start", start, period=period)
            node_rows += _replace(NodeRollup, node_rollup_rows(period, start, None), "start", start, period=period)
        day_start = None if since is None else _floor(since, RollupPeriod.DAY)
        message_rows = _replace(ErrorMessageRollup, error_message_rows(day_start, None), "day", day_start)
        state.refreshed_until = now
        state.save(update_fields=["refreshed_until"])
    cache.delete_many([KNOWN_VALUES_KEY.format(name) for name in ("backend", "job_type")])
    logger.info(
        "stats roll-up refreshed since %s: %d job, %d node, %d message rows", since, job_rows, node_rows, message_rows
    )
    return RefreshResult(since, now, job_rows, node_rows, message_rows)
