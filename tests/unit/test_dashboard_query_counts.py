"""The dashboard and the API lists run the same number of queries whatever the page size, the queue
length and the history behind them (issue 12: constant queries at a million jobs; the timings are
in devtools/benchmarks/dashboard_at_scale.py, not here). A query count is not a timing: it does not
depend on the machine."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from jobs.models import FailureCategory, Job, JobGroup, JobStatus
from monitoring.failure_stats import failure_stats
from monitoring.rollups import stats_rollup_refresh
from monitoring.stats import generation_stats
from tests.factories import SLEEP_WORKFLOW, JobFactory, UserFactory
from tests.unit.test_stats import finished_job

pytestmark = pytest.mark.django_db

POST_QUERY_GOAL = 20


def queries(call: Callable[[], Any]) -> int:
    with CaptureQueriesContext(connection) as captured:
        call()
    return len(captured)


@pytest.fixture
def staff_api() -> APIClient:
    api = APIClient()
    api.force_authenticate(UserFactory.create(username="lead", is_staff=True, is_superuser=True))
    return api


def get_ok(client: Any, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 200, response.content[:300]


def page_queries(client: Any, url: str) -> int:
    """The queries of a page seen before (the first request of a process fills caches: permissions,
    the learned ETA, the filters' known backends), as a dashboard open all day runs it."""
    get_ok(client, url)
    return queries(lambda: get_ok(client, url))


def wait_in_queue(count: int, group: JobGroup | None = None) -> None:
    for _ in range(count):
        JobFactory.create(status=JobStatus.QUEUED, group=group)


def test_job_list_queries_do_not_grow_with_the_page_size_or_the_queue(staff_api):
    wait_in_queue(3)
    few = page_queries(staff_api, "/api/jobs/?page_size=2")
    wait_in_queue(40)
    many = page_queries(staff_api, "/api/jobs/?page_size=40")
    assert many == few
    filtered = page_queries(staff_api, "/api/jobs/?status=queued&page_size=200")
    assert filtered == few


def test_posting_a_job_behind_a_long_queue_takes_at_most_20_queries(staff_api, django_capture_on_commit_callbacks):
    wait_in_queue(30)
    body = {"workflow": SLEEP_WORKFLOW, "job_type": "image", "priority": 5}
    with django_capture_on_commit_callbacks(execute=False):
        count = queries(lambda: staff_api.post("/api/jobs/", body, format="json"))
    assert Job.objects.count() == 31
    assert count <= POST_QUERY_GOAL


def test_group_list_queries_do_not_grow_with_the_page_size(staff_api):
    owner = UserFactory.create(username="artist-groups")
    for index in range(12):
        wait_in_queue(2, JobGroup.objects.create(user=owner, name=f"shot {index}"))
    few = page_queries(staff_api, "/api/groups/?page_size=2")
    many = page_queries(staff_api, "/api/groups/?page_size=12")
    assert many == few


def history(days: int) -> None:
    """Finished jobs on every day of the window, on two backends, with failures of two kinds."""
    now = timezone.localtime()
    # Five minutes ago, but never before today's midnight: the windows count whole days, and in the
    # first minutes after midnight "five minutes ago" was yesterday (the oldest day fell out).
    anchor = max(now - timedelta(minutes=5), now.replace(hour=0, minute=0, second=0, microsecond=0))
    for day in range(days):
        finished = anchor - timedelta(days=day)
        finished_job(finished_at=finished, backend="gpu1")
        finished_job(finished_at=finished, backend="gpu2", job_type="video", run=600)
        category = FailureCategory.OUT_OF_MEMORY if day % 2 else FailureCategory.LOST
        finished_job(finished_at=finished, status=JobStatus.FAILED, category=category, message=f"error {day % 3}")
    stats_rollup_refresh(rebuild=True)


def test_statistics_and_failures_read_the_same_queries_for_a_day_or_a_month_of_history(admin_client):
    history(1)
    small = [
        queries(lambda: generation_stats(days=30)),
        queries(lambda: failure_stats(days=30)),
        page_queries(admin_client, "/admin/dashboard/statistics/?days=30"),
        page_queries(admin_client, "/admin/dashboard/failures/?days=30"),
    ]
    history(30)
    large = [
        queries(lambda: generation_stats(days=30)),
        queries(lambda: failure_stats(days=30)),
        page_queries(admin_client, "/admin/dashboard/statistics/?days=30"),
        page_queries(admin_client, "/admin/dashboard/failures/?days=30"),
    ]
    assert large == small
    assert generation_stats(days=30)["overall"]["count"] == 3 + 90


def test_admin_job_list_queries_do_not_grow_with_the_jobs_shown(admin_client):
    wait_in_queue(3)
    few = page_queries(admin_client, "/admin/jobs/job/")
    wait_in_queue(60)
    many = page_queries(admin_client, "/admin/jobs/job/")
    assert many == few
