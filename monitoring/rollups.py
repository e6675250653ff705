"""Roll-ups of finished jobs, node timings and error messages, kept current by a beat task.

The statistics and failure pages read these tables, never a million jobs. A refresh recomputes
whole hours and days (delete + insert), so it is idempotent: running it twice, or over a period
that was already done, changes nothing. It starts a little before the last refresh, because a job's
`finished_at` is stamped just before its transaction commits.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.db import connection, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Count, FloatField, Func, IntegerField, Max, QuerySet, Sum
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


def _bucket_case() -> str:
    steps = " ".join(f"WHEN %(expressions)s < {edge!r} THEN {index}" for index, edge in enumerate(DURATION_EDGES))
    return f"CASE WHEN %(expressions)s IS NULL THEN NULL {steps} ELSE {len(DURATION_EDGES)} END"


class DurationBucket(Func):
    """The histogram bucket of a duration: how many of DURATION_EDGES are at or below it (None for None).

    Computed once per row, so a roll-up groups by (cell, bucket) in one scan; a filtered COUNT per
    bucket evaluated the duration 160 times per job (13 s for 100,000 jobs, where this takes a few).
    PostgreSQL has it built in (`width_bucket` over the edges); elsewhere it is a CASE over the edges.
    """

    output_field = IntegerField()
    arity = 1
    template = _bucket_case()
    edges = ", ".join(repr(float(edge)) for edge in DURATION_EDGES)

    def as_postgresql(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra_context: Any
    ) -> tuple[str, tuple[str | int, ...]]:
        template = f"width_bucket(%(expressions)s, ARRAY[{self.edges}]::double precision[])"
        return super().as_sql(compiler, connection, template=template, **extra_context)


BUCKETS = len(DURATION_EDGES) + 1


def histogram_totals(rows: QuerySet[Any], column: str, keys: Sequence[str]) -> dict[tuple[Any, ...], list[int]]:
    """The JSON histograms in `column` of `rows`, added up bucket by bucket per `keys`, in the database.

    Reading 5,000 lists of 55 numbers for 90 days at a million jobs and adding them in Python took
    most of the statistics page (~0.3 s); here each list is expanded into (bucket, count) rows and
    summed by the database: a few hundred rows come back. PostgreSQL expands a jsonb array with
    `jsonb_array_elements_text ... WITH ORDINALITY`, SQLite with `json_each`.
    """
    quote = connection.ops.quote_name
    table = quote(rows.model._meta.db_table)
    # The rows' own filters on the table itself: as `id IN (subquery)` the planner hashed the whole
    # table (107,000 roll-up rows, hours included) to find 1,080 day rows.
    query = rows.order_by().query
    where, params = query.get_compiler(connection=connection).compile(query.where)
    key_columns = ", ".join(f"{table}.{quote(key)}" for key in keys)
    if connection.vendor == "postgresql":
        expand = f"jsonb_array_elements_text({table}.{quote(column)}) WITH ORDINALITY AS h(n, i)"
        bucket, count = "h.i - 1", "h.n::bigint"
    else:
        expand, bucket, count = f"json_each({table}.{quote(column)}) AS h", "h.key", "h.value"
    sql = (
        f"SELECT {key_columns}, {bucket}, SUM({count}) FROM {table} CROSS JOIN {expand} "
        f"WHERE {where or '1 = 1'} GROUP BY {key_columns}, {bucket}"
    )
    totals: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0] * BUCKETS)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for *key, index, total in cursor.fetchall():
            if int(index) < BUCKETS:
                totals[tuple(key)][int(index)] = int(total)
    return dict(totals)


def _finished_jobs(start: datetime | None, end: datetime | None) -> QuerySet[Job]:
    jobs = Job.objects.filter(status__in=FINAL_STATUSES, finished_at__isnull=False)
    if start is not None:
        jobs = jobs.filter(finished_at__gte=start)
    if end is not None:
        jobs = jobs.filter(finished_at__lt=end)
    return jobs.order_by()


JOB_CELL = ("bucket", "job_type", "backend", "status", "failure_category")


def _job_cell(period: str, row: Mapping[str, Any]) -> JobRollup:
    return JobRollup(
        period=period,
        start=row["bucket"],
        job_type=row["job_type"],
        backend=row["backend"],
        status=row["status"],
        failure_category=row["failure_category"],
        wait_hist=[0] * BUCKETS if period == RollupPeriod.DAY else [],
        run_hist=[0] * BUCKETS if period == RollupPeriod.DAY else [],
    )


def _cell_add(cell: JobRollup, row: Mapping[str, Any], kind: str) -> None:
    """Add one grouped row's wait or run figures (count, sum, longest, its histogram bucket) to a cell."""
    setattr(cell, f"{kind}_count", getattr(cell, f"{kind}_count") + row[f"{kind}_n"])
    setattr(cell, f"{kind}_sum", getattr(cell, f"{kind}_sum") + (row[f"{kind}_total"] or 0.0))
    setattr(cell, f"{kind}_max", _longest(getattr(cell, f"{kind}_max"), row[f"{kind}_longest"]))
    if row.get("histogram_bucket") is not None:
        getattr(cell, f"{kind}_hist")[row["histogram_bucket"]] += row[f"{kind}_n"]


def _duration_sums(kind: str) -> dict[str, Any]:
    return {f"{kind}_n": Count(kind), f"{kind}_total": Sum(kind), f"{kind}_longest": Max(kind)}


def job_rollup_rows(period: str, start: datetime | None, end: datetime | None) -> list[JobRollup]:
    """Aggregate the jobs that finished in [start, end) into one row per cell of `period`.

    Day rows carry the wait and run histograms that the percentiles read: one grouped scan per
    duration, by cell and histogram bucket. Hour rows carry counts, sums and maxima only (the
    48-hour throughput chart reads them): one scan, which keeps the per-minute refresh cheap.
    """
    jobs = (
        _finished_jobs(start, end)
        .alias(wait=SecondsBetween(Coalesce("submitted_at", "started_at"), "created_at"))
        .alias(run=SecondsBetween("finished_at", "started_at"))
        .annotate(bucket=Trunc("finished_at", period))
    )
    cells: dict[tuple[Any, ...], JobRollup] = {}
    if period != RollupPeriod.DAY:
        for row in jobs.values(*JOB_CELL).annotate(n=Count("pk"), **_duration_sums("wait"), **_duration_sums("run")):
            cell = cells[tuple(row[key] for key in JOB_CELL)] = _job_cell(period, row)
            cell.count = row["n"]
            _cell_add(cell, row, "wait")
            _cell_add(cell, row, "run")
        return list(cells.values())
    for kind in ("wait", "run"):
        rows = (
            jobs.annotate(histogram_bucket=DurationBucket(kind))
            .values(*JOB_CELL, "histogram_bucket")
            .annotate(n=Count("pk"), **_duration_sums(kind))
        )
        for row in rows:
            cell = cells.setdefault(tuple(row[key] for key in JOB_CELL), _job_cell(period, row))
            if kind == "wait":
                cell.count += row["n"]
            _cell_add(cell, row, kind)
    for cell in cells.values():
        _trim(cell.wait_hist)
        _trim(cell.run_hist)
    return list(cells.values())


def _trim(histogram: list[int]) -> None:
    """Drop the empty buckets at the long end: most cells end far below two hours, and the
    statistics expand every stored bucket when they add histograms up (histogram_totals)."""
    while histogram and not histogram[-1]:
        histogram.pop()


def _longest(known: float | None, seen: float | None) -> float | None:
    return known if seen is None else seen if known is None else max(known, seen)


def node_rollup_rows(period: str, start: datetime | None, end: datetime | None) -> list[NodeRollup]:
    timings = NodeTiming.objects.order_by()
    if start is not None:
        timings = timings.filter(finished_at__gte=start)
    if end is not None:
        timings = timings.filter(finished_at__lt=end)
    rows = (
        timings.annotate(bucket=Trunc("finished_at", period), histogram_bucket=DurationBucket("duration"))
        .values("bucket", "class_type", "backend", "histogram_bucket")
        .annotate(n=Count("pk"), total=Sum("duration"), longest=Max("duration"))
    )
    cells: dict[tuple[Any, ...], NodeRollup] = {}
    for row in rows:
        key = (row["bucket"], row["class_type"], row["backend"])
        cell = cells.get(key)
        if cell is None:
            cell = cells[key] = NodeRollup(
                period=period,
                start=row["bucket"],
                class_type=row["class_type"],
                backend=row["backend"],
                duration_hist=[0] * BUCKETS,
            )
        cell.count += row["n"]
        cell.duration_sum += row["total"] or 0.0
        cell.duration_max = max(cell.duration_max, row["longest"] or 0.0)
        cell.duration_hist[row["histogram_bucket"]] += row["n"]
    for cell in cells.values():
        _trim(cell.duration_hist)
    return list(cells.values())


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
        job_rows = 0
        for period in (RollupPeriod.HOUR, RollupPeriod.DAY):
            start = None if since is None else _floor(since, period)
            job_rows += _replace(JobRollup, job_rollup_rows(period, start, None), "start", start, period=period)
        # Node classes are read per day only (the slowest nodes of a window of whole days).
        day_start = None if since is None else _floor(since, RollupPeriod.DAY)
        node_rows = _replace(
            NodeRollup, node_rollup_rows(RollupPeriod.DAY, day_start, None), "start", day_start, period=RollupPeriod.DAY
        )
        message_rows = _replace(ErrorMessageRollup, error_message_rows(day_start, None), "day", day_start)
        state.refreshed_until = now
        state.save(update_fields=["refreshed_until"])
    cache.delete_many([KNOWN_VALUES_KEY.format(name) for name in ("backend", "job_type")])
    logger.info(
        "stats roll-up refreshed since %s: %d job, %d node, %d message rows", since, job_rows, node_rows, message_rows
    )
    return RefreshResult(since, now, job_rows, node_rows, message_rows)
