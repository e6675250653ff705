"""GPU-seconds per user per UTC day, kept once a day is closed, so that the 7-day figures (the usage
page, GET /api/quotas/) read at most seven small rows per user and only today's jobs live, instead of
a week of jobs (90,000 rows at a million jobs took about a second).

A day is closed when every job that started on it must have ended: the day is over by more than
JOB_MAX_SECONDS (a longer job is failed as timed out) plus a sweep's slack. Closed days are rolled up
on first read, one aggregate per day over the finished_at index; two readers doing it at once write
the same rows once (unique constraints)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, DurationField, F, Sum

from jobs.models import Job
from quotas.models import UsageDayRolledUp, UserDayUsage
from quotas.usage import seconds, utc_day_start

DAY = timedelta(days=1)
WEEK_DAYS = 7
SWEEP_SLACK = timedelta(minutes=15)


def settle_time() -> timedelta:
    return timedelta(seconds=settings.JOB_MAX_SECONDS) + SWEEP_SLACK


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def week_days(now: datetime) -> list[date]:
    """The last 7 UTC days, today included, oldest first."""
    today = utc_day_start(now).date()
    return [today - timedelta(days=back) for back in range(WEEK_DAYS - 1, -1, -1)]


def day_closed(day: date, now: datetime) -> bool:
    return day_start(day) + DAY + settle_time() <= now


def day_roll_up(day: date) -> None:
    start = day_start(day)
    rows = (
        Job.objects.filter(
            finished_at__gte=start,
            finished_at__lt=start + DAY + settle_time(),
            started_at__gte=start,
            started_at__lt=start + DAY,
            user__isnull=False,
        )
        .values("user_id")
        .annotate(gpu=Sum(F("finished_at") - F("started_at"), output_field=DurationField()), jobs=Count("id"))
        .order_by()
    )
    usage = [
        UserDayUsage(user_id=row["user_id"], day=day, gpu_seconds=seconds(row["gpu"]), jobs=row["jobs"]) for row in rows
    ]
    with transaction.atomic():
        UserDayUsage.objects.bulk_create(usage, ignore_conflicts=True)
        UsageDayRolledUp.objects.bulk_create([UsageDayRolledUp(day=day)], ignore_conflicts=True)


def week_rolled_up(now: datetime, *, user_id: int | None = None) -> tuple[datetime, dict[int, tuple[str, int]]]:
    """(live_since, {user id: (username, GPU-seconds)}) for the closed days of the last 7: the caller
    adds the jobs started since `live_since` (today, and yesterday until it closes) from the jobs.
    Two queries once every closed day is rolled up; one more per day the first time."""
    closed = [day for day in week_days(now) if day_closed(day, now)]
    done = set(UsageDayRolledUp.objects.filter(day__in=closed).values_list("day", flat=True))
    for day in closed:
        if day not in done:
            day_roll_up(day)
    open_days = [day for day in week_days(now) if day not in closed]
    live_since = day_start(open_days[0])
    kept = UserDayUsage.objects.filter(day__in=closed)
    if user_id is not None:
        kept = kept.filter(user_id=user_id)
    rows = kept.values("user_id", "user__username").annotate(gpu=Sum("gpu_seconds")).order_by()
    return live_since, {row["user_id"]: (row["user__username"], int(row["gpu"] or 0)) for row in rows}
