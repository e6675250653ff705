"""/api/stats/ carries the failed jobs per category (what `anime-jobs report` prints), from the same
roll-ups and over the same window as the rest of its figures."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone
from rest_framework.test import APIClient

from jobs.models import FailureCategory, JobStatus
from monitoring.rollups import stats_rollup_refresh
from tests.factories import UserFactory
from tests.unit.test_stats import finished_job

pytestmark = pytest.mark.django_db


@pytest.fixture
def lead() -> APIClient:
    user = UserFactory.create(username="lead", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_job"))
    client = APIClient()
    client.force_authenticate(type(user).objects.get(pk=user.pk))
    return client


def test_failures_per_category_most_frequent_first_within_the_window(lead):
    for category in (FailureCategory.OUT_OF_MEMORY, FailureCategory.NODE_ERROR, FailureCategory.OUT_OF_MEMORY):
        finished_job(status=JobStatus.FAILED, category=category, run=5)
    finished_job(
        status=JobStatus.FAILED, category=FailureCategory.LOST, finished_at=timezone.now() - timedelta(days=10)
    )
    finished_job()  # completed jobs are no failures
    stats_rollup_refresh()

    week = lead.get("/api/stats/?days=7").json()
    assert week["failures_by_category"] == [
        {"category": "out_of_memory", "label": FailureCategory.OUT_OF_MEMORY.label, "count": 2},
        {"category": "node_error", "label": FailureCategory.NODE_ERROR.label, "count": 1},
    ]
    assert sum(row["count"] for row in week["failures_by_category"]) == week["overall"]["failed"]
    month = lead.get("/api/stats/?days=30").json()
    assert {row["category"]: row["count"] for row in month["failures_by_category"]}["lost"] == 1


def test_no_failures_is_an_empty_list(lead):
    finished_job()
    stats_rollup_refresh()
    assert lead.get("/api/stats/?days=1").json()["failures_by_category"] == []
