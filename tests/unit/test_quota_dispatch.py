"""Quotas and late routing together, with nothing mocked: a user at their running limit (or over
today's GPU budget) waits while a free GPU takes another user's job, and their job starts when one of
theirs ends."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from jobs import dispatch, services
from jobs.models import Job, JobStatus
from quotas.models import UserQuota
from quotas.usage import utc_day_start
from tests.factories import SLEEP_WORKFLOW, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def two_backends(settings: Any) -> None:
    settings.COMFYUI_BACKENDS = {"gpu-a": "http://127.0.0.1:9", "gpu-b": "http://127.0.0.1:9"}
    settings.COMFYUI_DEFAULT_BACKEND = "gpu-a"
    settings.QUOTA_OVER_LIMIT = "reject"
    settings.QUOTA_MAX_RUNNING_JOBS = None
    settings.QUOTA_MAX_WAITING_JOBS = None
    settings.QUOTA_GPU_SECONDS_PER_DAY = None


def submit(user: Any) -> Job:
    workflow = {k: dict(v) for k, v in SLEEP_WORKFLOW.items()}
    return services.job_create(user=user, workflow=workflow, job_type="image")


def test_a_user_at_their_running_limit_waits_while_another_users_job_runs(settings: Any) -> None:
    settings.QUOTA_MAX_RUNNING_JOBS = 1
    alice, bob = UserFactory.create(), UserFactory.create()
    first, second = submit(alice), submit(alice)
    bobs = submit(bob)  # after both of Alice's
    assert dispatch.job_take_next("gpu-a").pk == first.pk  # type: ignore[union-attr]
    taken = dispatch.job_take_next("gpu-b")
    assert taken is not None and taken.pk == bobs.pk, "Alice is at her limit of 1: Bob's job runs"
    assert Job.objects.get(pk=second.pk).status == JobStatus.QUEUED
    services.job_close(Job.objects.get(pk=first.pk), JobStatus.COMPLETED)
    assert dispatch.job_take_next("gpu-a").pk == second.pk, "hers starts when her first ends"  # type: ignore[union-attr]


def test_a_user_over_todays_gpu_budget_waits_in_wait_mode(settings: Any) -> None:
    now = timezone.now()
    start = max(utc_day_start(now), now - timedelta(seconds=300))
    if (now - start).total_seconds() < 200:
        pytest.skip("too close to 00:00 UTC")
    settings.QUOTA_OVER_LIMIT = "wait"
    alice, bob = UserFactory.create(), UserFactory.create()
    UserQuota.objects.create(user=alice, gpu_seconds_per_day=120)
    Job.objects.create(
        user=alice, backend="gpu-a", job_type="image", workflow={}, status=JobStatus.COMPLETED,
        started_at=start, finished_at=now,
    )  # fmt: skip
    alices = submit(alice)  # accepted: wait mode
    bobs = submit(bob)
    assert dispatch.job_take_next("gpu-a").pk == bobs.pk  # type: ignore[union-attr]
    assert dispatch.job_take_next("gpu-b") is None, "Alice's job waits for 00:00 UTC"
    assert Job.objects.get(pk=alices.pk).status == JobStatus.QUEUED
