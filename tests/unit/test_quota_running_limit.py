"""quotas.limits.users_at_running_limit: who may not start another job now (dispatch skips them),
from the running limit and the daily GPU-second budget (UTC day), in one query whatever the users."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobs.models import JobStatus
from quotas.limits import default_limits, user_limits_forget, users_at_running_limit
from quotas.models import UserQuota
from quotas.usage import utc_day_start
from tests.factories import JobFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _forget_gpu_limits():
    user_limits_forget()
    yield
    user_limits_forget()


def running(user, n=1):
    return JobFactory.create_batch(n, user=user, status=JobStatus.RUNNING, started_at=timezone.now())


def test_no_limit_configured_holds_no_one_and_a_dispatch_asks_the_database_nothing(settings):
    settings.QUOTA_MAX_RUNNING_JOBS = None
    settings.QUOTA_GPU_SECONDS_PER_DAY = None
    running(UserFactory.create(), 5)
    UserQuota.objects.create(user=UserFactory.create(), max_waiting_jobs=3)  # limits no running job
    assert users_at_running_limit() == set()  # asks once which limits users have
    with CaptureQueriesContext(connection) as queries:
        assert users_at_running_limit() == set()
    assert len(queries) == 0


def test_a_running_limit_saved_in_the_admin_holds_the_user_at_once(settings, admin_client):
    settings.QUOTA_MAX_RUNNING_JOBS = None
    settings.QUOTA_GPU_SECONDS_PER_DAY = None
    artist = UserFactory.create()
    running(artist, 2)
    assert users_at_running_limit() == set(), "no limit anywhere yet (and that answer is kept)"
    response = admin_client.post(
        "/admin/quotas/userquota/add/",
        {"user": artist.pk, "max_running_jobs": "2", "max_waiting_jobs": "", "gpu_seconds_per_day": "", "note": ""},
    )
    assert response.status_code == 302
    assert users_at_running_limit() == {artist.pk}


def test_default_running_limit_holds_a_user_at_it_and_not_one_under_it(settings):
    settings.QUOTA_MAX_RUNNING_JOBS = 2
    at, under = UserFactory.create(), UserFactory.create()
    running(at, 2)
    running(under, 1)
    JobFactory.create_batch(5, user=under, status=JobStatus.QUEUED)  # waiting jobs do not count as running
    assert users_at_running_limit() == {at.pk}


def test_a_submitted_job_counts_as_on_a_gpu(settings):
    settings.QUOTA_MAX_RUNNING_JOBS = 1
    user = UserFactory.create()
    JobFactory.create(user=user, status=JobStatus.SUBMITTED)
    assert users_at_running_limit() == {user.pk}


def test_a_user_row_overrides_the_default_either_way(settings):
    settings.QUOTA_MAX_RUNNING_JOBS = 1
    roomy, tight, free = UserFactory.create(), UserFactory.create(), UserFactory.create()
    UserQuota.objects.create(user=roomy, max_running_jobs=3)
    UserQuota.objects.create(user=free, unlimited=True)
    for user in (roomy, tight, free):
        running(user, 1)
    assert users_at_running_limit() == {tight.pk}


def test_a_row_alone_limits_when_no_default_is_set(settings):
    settings.QUOTA_MAX_RUNNING_JOBS = None
    settings.QUOTA_GPU_SECONDS_PER_DAY = None
    limited, other = UserFactory.create(), UserFactory.create()
    UserQuota.objects.create(user=limited, max_running_jobs=1)
    running(limited, 1)
    running(other, 4)
    assert users_at_running_limit() == {limited.pk}


def test_gpu_seconds_today_count_finished_and_running_jobs_started_today_utc(settings):
    settings.QUOTA_GPU_SECONDS_PER_DAY = 600
    now = timezone.now()
    day = utc_day_start(now)
    over, under = UserFactory.create(), UserFactory.create()
    start = max(day, now - timedelta(hours=1))
    spent = (now - start).total_seconds()
    if spent < 400:
        pytest.skip("too close to 00:00 UTC to place 10 minutes of run time inside today")
    # 300 s finished + a running job that started `spent - 300` s ago... at least 600 s in all.
    JobFactory.create(
        user=over, status=JobStatus.COMPLETED, started_at=start, finished_at=start + timedelta(seconds=300)
    )
    JobFactory.create(user=over, status=JobStatus.RUNNING, started_at=now - timedelta(seconds=320))
    # A long job that started yesterday counts for yesterday, not today.
    JobFactory.create(
        user=under,
        status=JobStatus.COMPLETED,
        started_at=day - timedelta(hours=5),
        finished_at=now,
    )
    JobFactory.create(
        user=under, status=JobStatus.COMPLETED, started_at=start, finished_at=start + timedelta(seconds=100)
    )
    assert users_at_running_limit() == {over.pk}


def test_one_query_whatever_the_number_of_users(settings):
    settings.QUOTA_MAX_RUNNING_JOBS = 1
    settings.QUOTA_GPU_SECONDS_PER_DAY = 10_000
    counts = []
    for users in (2, 20):
        for _ in range(users):
            user = UserFactory.create()
            UserQuota.objects.create(user=user, max_running_jobs=2)
            running(user, 2)
        users_at_running_limit()  # today's finished jobs, summed once a minute per process
        with CaptureQueriesContext(connection) as queries:
            held = users_at_running_limit()
        counts.append(len(queries))
        assert len(held) == UserQuota.objects.count()
    assert counts == [1, 1]


def test_defaults_read_from_settings(settings):
    settings.QUOTA_MAX_RUNNING_JOBS = 4
    settings.QUOTA_MAX_WAITING_JOBS = None
    settings.QUOTA_GPU_SECONDS_PER_DAY = 3600
    limits = default_limits()
    assert (limits.max_running_jobs, limits.max_waiting_jobs, limits.gpu_seconds_per_day) == (4, None, 3600)


def test_a_users_own_daily_gpu_limit_holds_them_without_a_default(settings):
    settings.QUOTA_MAX_RUNNING_JOBS = None
    settings.QUOTA_GPU_SECONDS_PER_DAY = None
    now = timezone.now()
    start = max(utc_day_start(now), now - timedelta(seconds=200))
    spender, other = UserFactory.create(), UserFactory.create()
    UserQuota.objects.create(user=spender, gpu_seconds_per_day=60)
    UserQuota.objects.create(user=other, max_running_jobs=5)
    for user in (spender, other):
        JobFactory.create(user=user, status=JobStatus.COMPLETED, started_at=start, finished_at=now)
    if (now - start).total_seconds() < 60:
        pytest.skip("too close to 00:00 UTC")
    assert users_at_running_limit() == {spender.pk}


def test_without_any_daily_gpu_limit_a_dispatch_reads_only_the_jobs_on_a_gpu(settings):
    settings.QUOTA_MAX_RUNNING_JOBS = 2
    settings.QUOTA_GPU_SECONDS_PER_DAY = None
    UserQuota.objects.create(user=UserFactory.create(), max_running_jobs=1)
    users_at_running_limit()  # asks once whether any user has a daily GPU limit
    with CaptureQueriesContext(connection) as queries:
        users_at_running_limit()
    where = queries[0]["sql"].split(" WHERE ", 1)[1]
    assert len(queries) == 1 and "finished_at" not in where, where


def test_a_job_finished_after_todays_sum_was_taken_counts_at_once(settings):
    settings.QUOTA_MAX_RUNNING_JOBS = None
    settings.QUOTA_GPU_SECONDS_PER_DAY = 100
    now = timezone.now()
    start = max(utc_day_start(now), now - timedelta(seconds=150))
    if (now - start).total_seconds() < 120:
        pytest.skip("too close to 00:00 UTC")
    earlier, later = UserFactory.create(), UserFactory.create()
    JobFactory.create(user=earlier, status=JobStatus.COMPLETED, started_at=start, finished_at=now)
    assert users_at_running_limit() == {earlier.pk}, "summed from today's finished jobs"
    JobFactory.create(user=later, status=JobStatus.COMPLETED, started_at=start, finished_at=timezone.now())
    with CaptureQueriesContext(connection) as queries:
        held = users_at_running_limit()
    assert held == {earlier.pk, later.pk} and len(queries) == 1, "the sum is kept, the new finish read"


def test_a_daily_limit_saved_in_the_admin_holds_the_user_at_once(settings, admin_client):
    settings.QUOTA_MAX_RUNNING_JOBS = None
    settings.QUOTA_GPU_SECONDS_PER_DAY = None
    now = timezone.now()
    start = max(utc_day_start(now), now - timedelta(seconds=200))
    if (now - start).total_seconds() < 100:
        pytest.skip("too close to 00:00 UTC")
    artist = UserFactory.create()
    JobFactory.create(user=artist, status=JobStatus.COMPLETED, started_at=start, finished_at=now)
    assert users_at_running_limit() == set(), "no daily limit anywhere yet (and that answer is kept)"
    response = admin_client.post(
        "/admin/quotas/userquota/add/",
        {"user": artist.pk, "gpu_seconds_per_day": "60", "max_running_jobs": "", "max_waiting_jobs": "", "note": ""},
    )
    assert response.status_code == 302
    assert users_at_running_limit() == {artist.pk}
