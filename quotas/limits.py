"""Which limits apply to whom, and who may not start another job now.

A limit is a number or None (unlimited). A user's UserQuota row overrides the defaults from settings
(QUOTA_MAX_RUNNING_JOBS, QUOTA_MAX_WAITING_JOBS, QUOTA_GPU_SECONDS_PER_DAY) field by field: a blank field
takes the default, `unlimited` lifts them all. Users without a row take the defaults.

jobs' dispatch imports this module (the layers contract allows exactly that): keep its imports to
django, jobs.models and quotas."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, F, Q
from django.utils import timezone

from jobs.models import ACTIVE_STATUSES, Job
from quotas.usage import gpu_time, seconds, utc_day_start


@dataclass(frozen=True)
class Limits:
    max_running_jobs: int | None = None
    max_waiting_jobs: int | None = None
    gpu_seconds_per_day: int | None = None

    @property
    def any(self) -> bool:
        return any(
            value is not None for value in (self.max_running_jobs, self.max_waiting_jobs, self.gpu_seconds_per_day)
        )


UNLIMITED = Limits()
LIMIT_FIELDS = ("max_running_jobs", "max_waiting_jobs", "gpu_seconds_per_day")


def default_limits() -> Limits:
    return Limits(
        max_running_jobs=setting_limit("QUOTA_MAX_RUNNING_JOBS"),
        max_waiting_jobs=setting_limit("QUOTA_MAX_WAITING_JOBS"),
        gpu_seconds_per_day=setting_limit("QUOTA_GPU_SECONDS_PER_DAY"),
    )


def setting_limit(name: str) -> int | None:
    # Anything but a number was refused at start (quotas.checks).
    value = getattr(settings, name, None)
    return value if isinstance(value, int) else None


def limits_from(row: dict[str, Any] | None, defaults: Limits) -> Limits:
    """The limits of a user whose UserQuota fields are `row` (None: no row)."""
    if row is None:
        return defaults
    if row.get("unlimited"):
        return UNLIMITED
    return Limits(
        **{name: row[name] if row.get(name) is not None else getattr(defaults, name) for name in LIMIT_FIELDS}
    )


def user_quota_fields(user_id: int) -> dict[str, Any] | None:
    """The user's UserQuota fields (None: no row): one query."""
    from quotas.models import UserQuota

    return UserQuota.objects.filter(user_id=user_id).values("unlimited", *LIMIT_FIELDS).first()


def user_limits(user_id: int) -> Limits:
    """One user's limits: one query."""
    return limits_from(user_quota_fields(user_id), default_limits())


def users_at_running_limit() -> set[int]:
    """The ids of users who may not start another job now: their jobs on a GPU (submitted or running)
    reached their running limit, or their GPU-seconds today (UTC) reached their daily limit.

    No query when no limit is set anywhere (in the settings or a user's own); else one: the jobs on a
    GPU (and, when a daily GPU limit is set anywhere, the jobs finished since the fleet's sum of
    today's finished jobs was taken: quotas.limits.FinishedToday), per user, with the user's own
    limits joined. A snapshot: two backends choosing at the same instant may each
    start one more of a user's jobs."""
    now = timezone.now()
    day = utc_day_start(now)
    defaults = default_limits()
    running_limits, gpu_limits = user_limits_exist()
    no_defaults = defaults.max_running_jobs is None and defaults.gpu_seconds_per_day is None
    if no_defaults and not (running_limits or gpu_limits):
        return set()  # nobody can be held: no query at all
    counted = Q(status__in=ACTIVE_STATUSES)
    finished = None
    if defaults.gpu_seconds_per_day is not None:
        finished = finished_today(now, only_own_limits=False)
        counted |= Q(finished_at__gte=finished.until)
    elif gpu_limits:
        finished = finished_today(now, only_own_limits=True)
        counted |= Q(finished_at__gte=finished.until, user__quota__gpu_seconds_per_day__isnull=False)
    jobs = Job.objects.filter(counted, user__isnull=False)
    if no_defaults:
        # Only users with a row of their own can be limited: with no row at all this reads nothing.
        jobs = jobs.filter(user__quota__isnull=False)
    rows = (
        jobs.values("user_id", **QUOTA_COLUMNS)
        .annotate(running=Count("id", filter=Q(status__in=ACTIVE_STATUSES)), gpu_today=gpu_time(since=day, now=now))
        .order_by()
    )
    before = dict(finished.by_user) if finished else {}
    held: set[int] = set()
    for row in rows:
        limits = limits_from({**row, "max_waiting_jobs": None}, defaults)
        gpu = seconds(row["gpu_today"]) + before.pop(row["user_id"], (0, {}))[0]
        if at_limit(row["running"], limits.max_running_jobs) or at_limit(gpu, limits.gpu_seconds_per_day):
            held.add(row["user_id"])
    # Users with nothing on a GPU now: their jobs finished earlier today, with their limits as then read.
    for user_id, (gpu, quota) in before.items():
        if at_limit(gpu, limits_from({**quota, "max_waiting_jobs": None}, defaults).gpu_seconds_per_day):
            held.add(user_id)
    return held


QUOTA_COLUMNS = {
    "unlimited": F("user__quota__unlimited"),
    "max_running_jobs": F("user__quota__max_running_jobs"),
    "gpu_seconds_per_day": F("user__quota__gpu_seconds_per_day"),
}


@dataclass(frozen=True)
class FinishedToday:
    """GPU-seconds of each user's jobs that started today and finished before `until`, with the user's
    own limits: (seconds, quota columns) by user id."""

    day: datetime
    until: datetime
    only_own_limits: bool
    by_user: dict[int, tuple[int, dict[str, Any]]]


# A dispatch reads the jobs finished today (4,000 at a million jobs: 22-50 ms of heap reads) once per
# FINISHED_TTL seconds for the whole fleet, kept in the cache (Redis), and in between only those
# finished since (a few), so that a daily GPU limit costs a dispatch what the running limit costs. A
# job whose finish committed after the sum was taken with an earlier finished_at is missed until the
# next sum, at most FINISHED_TTL later.
FINISHED_TTL = 60
FINISHED_KEY = "quotas:finished-today"


def finished_today(now: datetime, *, only_own_limits: bool) -> FinishedToday:
    day = utc_day_start(now)
    cached = cache.get(FINISHED_KEY)
    if (
        isinstance(cached, FinishedToday)
        and cached.day == day
        and cached.only_own_limits == only_own_limits
        and 0 <= (now - cached.until).total_seconds() < FINISHED_TTL
    ):
        return cached
    jobs = Job.objects.filter(finished_at__gte=day, finished_at__lt=now, started_at__gte=day, user__isnull=False)
    if only_own_limits:
        jobs = jobs.filter(user__quota__gpu_seconds_per_day__isnull=False)
    rows = jobs.values("user_id", **QUOTA_COLUMNS).annotate(gpu=gpu_time(since=day, now=now)).order_by()
    by_user = {
        row["user_id"]: (seconds(row["gpu"]), {name: cast(dict[str, Any], row)[name] for name in QUOTA_COLUMNS})
        for row in rows
    }
    summed = FinishedToday(day, now, only_own_limits, by_user)
    cache.set(FINISHED_KEY, summed, FINISHED_TTL)
    return summed


# Which limits users have of their own (running jobs, daily GPU), asked at most once per USER_LIMITS_TTL
# seconds (the answer kept in the cache): with no limit anywhere a dispatch reads nothing, and without a
# daily GPU limit it reads only the jobs on a GPU (tens of rows), not the jobs finished today. A limit
# set in the admin applies at once (UserQuotaAdmin forgets the answer).
USER_LIMITS_TTL = 10
USER_LIMITS_KEY = "quotas:user-own-limits"


def user_limits_exist() -> tuple[bool, bool]:
    """(whether any user has a running-jobs limit of their own, whether any has a daily GPU limit)."""
    found = cache.get(USER_LIMITS_KEY)
    if found is None:
        from quotas.models import UserQuota

        limited = UserQuota.objects.filter(unlimited=False)
        found = (
            limited.filter(max_running_jobs__isnull=False).exists(),
            limited.filter(gpu_seconds_per_day__isnull=False).exists(),
        )
        cache.set(USER_LIMITS_KEY, found, USER_LIMITS_TTL)
    return bool(found[0]), bool(found[1])


def user_limits_forget() -> None:
    """An admin save (and tests): the next dispatch asks again and sums today's finished jobs again."""
    cache.delete_many([USER_LIMITS_KEY, FINISHED_KEY])


def at_limit(used: int, limit: int | None) -> bool:
    return limit is not None and used >= limit
