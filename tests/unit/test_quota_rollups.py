"""The 7-day GPU-seconds: closed UTC days are kept per user once (quotas.rollups), today (and a day
whose jobs may still run) is read live; the figures are the same as counting the jobs themselves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs.models import JobStatus
from quotas.models import UsageDayRolledUp, UserDayUsage
from quotas.overview import usage_overview, user_week_usage
from tests.factories import JobFactory, UserFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def ran(user: Any, started: datetime, seconds: int, status: str = JobStatus.COMPLETED) -> None:
    finished = started + timedelta(seconds=seconds) if status != JobStatus.RUNNING else None
    JobFactory.create(user=user, status=status, started_at=started, finished_at=finished)


@pytest.fixture(autouse=True)
def _one_hour_jobs(settings: Any) -> None:
    settings.JOB_MAX_SECONDS = 3600


def test_the_week_is_the_closed_days_kept_plus_today_live() -> None:
    artist = UserFactory.create(username="artist")
    ran(artist, NOW - timedelta(days=3), 1000)
    ran(artist, NOW - timedelta(days=6, hours=11), 50)  # 6 days ago, 01:00 UTC: the oldest day of the 7
    ran(artist, NOW - timedelta(days=10), 5000)  # before the 7 days
    ran(artist, NOW - timedelta(hours=2), 200)
    ran(artist, NOW - timedelta(seconds=300), 0, status=JobStatus.RUNNING)  # counts up to now
    usage = user_week_usage(artist.pk, now=NOW)
    assert usage.gpu_seconds_today == 500 and usage.gpu_seconds_week == 1550
    kept = UserDayUsage.objects.get(user=artist, day=(NOW - timedelta(days=3)).date())
    assert (kept.gpu_seconds, kept.jobs) == (1000, 1)
    assert UsageDayRolledUp.objects.count() == 6, "the six closed days, today not"
    (row,) = usage_overview(now=NOW)
    assert (row.usage.gpu_seconds_week, row.usage.gpu_seconds_today, row.usage.running) == (1550, 500, 1)


def test_a_day_whose_jobs_may_still_run_is_read_live_not_kept() -> None:
    artist = UserFactory.create()
    just_after_midnight = NOW.replace(hour=0, minute=30)
    ran(artist, just_after_midnight - timedelta(hours=2), 600)  # yesterday, within JOB_MAX_SECONDS
    usage = user_week_usage(artist.pk, now=just_after_midnight)
    assert usage.gpu_seconds_week == 600 and usage.gpu_seconds_today == 0
    yesterday = (just_after_midnight - timedelta(days=1)).date()
    assert not UsageDayRolledUp.objects.filter(day=yesterday).exists()
    # Later that day, yesterday is closed: kept, and the week is the same.
    assert user_week_usage(artist.pk, now=NOW).gpu_seconds_week == 600
    assert UserDayUsage.objects.get(user=artist, day=yesterday).gpu_seconds == 600


def test_a_closed_day_is_rolled_up_once_and_then_read_in_constant_queries() -> None:
    for n in range(5):
        ran(UserFactory.create(), NOW - timedelta(days=2), 100 * (n + 1))
    usage_overview(now=NOW)
    counts = []
    for extra_users in (0, 30):
        for _ in range(extra_users):
            ran(UserFactory.create(), NOW - timedelta(hours=1), 60)
        with CaptureQueriesContext(connection) as queries:
            rows = usage_overview(now=NOW)
        counts.append(len(queries))
    assert counts == [4, 4]
    assert len(rows) == 35 and sorted(row.usage.gpu_seconds_week for row in rows)[-1] == 500
    assert UserDayUsage.objects.count() == 5
