"""What a user uses now, from the jobs' own rows: jobs running and waiting, GPU-seconds today and over
7 days. GPU-seconds are the run time (started_at to finished_at, or to now while it runs) of the jobs
that STARTED in the window; "today" is the UTC day (since 00:00 UTC), whatever TIME_ZONE says.

Every read here is one aggregate query over the jobs that matter now (waiting, on a GPU, or finished
in the window: the status and finished_at indexes), never over a user's whole history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Count, DateTimeField, DurationField, F, Q, Sum, Value
from django.db.models.functions import Coalesce

from jobs.models import ACTIVE_STATUSES, Job, JobStatus

# Blocked pipeline jobs wait too: they hold a place in the user's share of the queue.
WAITING_STATUSES = (JobStatus.QUEUED, JobStatus.BLOCKED)
WEEK = timedelta(days=7)


def utc_day_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def seconds_to_next_utc_day(now: datetime) -> int:
    return max(1, int((utc_day_start(now) + timedelta(days=1) - now).total_seconds()) + 1)


def gpu_time(*, since: datetime, now: datetime) -> Sum:
    """Run time of the jobs started since `since`; a job still running counts up to `now`."""
    end = Coalesce(F("finished_at"), Value(now, output_field=DateTimeField()))
    return Sum(end - F("started_at"), filter=Q(started_at__gte=since), output_field=DurationField())


def seconds(value: timedelta | None) -> int:
    return int(value.total_seconds()) if value else 0


@dataclass(frozen=True)
class Usage:
    running: int = 0
    waiting: int = 0
    gpu_seconds_today: int = 0
    gpu_seconds_week: int = 0


def usage_annotations(now: datetime) -> dict[str, Any]:
    return {
        "running": Count("id", filter=Q(status__in=ACTIVE_STATUSES)),
        "waiting": Count("id", filter=Q(status__in=WAITING_STATUSES)),
        "gpu_today": gpu_time(since=utc_day_start(now), now=now),
        "gpu_week": gpu_time(since=now - WEEK, now=now),
    }


def current_or_since(since: datetime) -> Q:
    """The jobs whose numbers can count: waiting, on a GPU, or finished since `since`."""
    return Q(status__in=(*WAITING_STATUSES, *ACTIVE_STATUSES)) | Q(finished_at__gte=since)


def usage_from(row: Any) -> Usage:
    return Usage(
        running=row["running"],
        waiting=row["waiting"],
        gpu_seconds_today=seconds(row["gpu_today"]),
        gpu_seconds_week=seconds(row["gpu_week"]),
    )


def user_usage(user_id: int, *, now: datetime) -> Usage:
    """One user's usage: one query."""
    rows = Job.objects.filter(current_or_since(now - WEEK), user_id=user_id).aggregate(**usage_annotations(now))
    return usage_from(rows)


def usage_by_user(*, now: datetime) -> dict[int, tuple[str, Usage]]:
    """Every user with jobs waiting, running or finished in the last 7 days: (username, usage). One query."""
    rows = (
        Job.objects.filter(current_or_since(now - WEEK), user__isnull=False)
        .values("user_id", "user__username")
        .annotate(**usage_annotations(now))
        .order_by()
    )
    return {row["user_id"]: (row["user__username"], usage_from(row)) for row in rows}
