"""Over a quota at submit: 429 with the reason (and Retry-After for the daily GPU budget), nothing made,
on every path that makes jobs (POST /api/jobs/, template runs and batches, pipelines, retries by hand);
a batch of N counts N; QUOTA_OVER_LIMIT=wait accepts the job instead. The check is a bounded number of
queries whatever the user's history."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import run_checks
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from jobs.models import Job, JobGroup, JobStatus
from quotas.admission import QuotaExceeded, submit_check
from quotas.models import UserQuota
from quotas.usage import utc_day_start
from tests.factories import SLEEP_WORKFLOW, JobFactory, UserFactory
from tests.media_files import asset_of, png
from tests.template_workflows import publish, publisher_user

pytestmark = pytest.mark.django_db

JOB = {"workflow": SLEEP_WORKFLOW, "job_type": "image"}


@pytest.fixture(autouse=True)
def _media(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(autouse=True)
def _reject(settings: Any) -> None:
    settings.QUOTA_OVER_LIMIT = "reject"
    settings.QUOTA_MAX_RUNNING_JOBS = None
    settings.QUOTA_MAX_WAITING_JOBS = None
    settings.QUOTA_GPU_SECONDS_PER_DAY = None


def waiting(user: Any, n: int) -> None:
    JobFactory.create_batch(n, user=user, status=JobStatus.QUEUED)


def spent_today(user: Any, seconds: int) -> None:
    now = timezone.now()
    start = max(utc_day_start(now), now - timedelta(seconds=seconds + 5))
    JobFactory.create(user=user, status=JobStatus.RUNNING, started_at=start)


def test_a_submit_under_the_waiting_limit_is_accepted(api: APIClient, user: Any, settings: Any) -> None:
    settings.QUOTA_MAX_WAITING_JOBS = 3
    waiting(user, 2)
    assert api.post("/api/jobs/", JOB, format="json").status_code == 201
    assert Job.objects.filter(user=user, status=JobStatus.QUEUED).count() == 3


def test_a_submit_at_the_waiting_limit_is_a_429_naming_the_limit_and_makes_nothing(
    api: APIClient, user: Any, settings: Any
) -> None:
    settings.QUOTA_MAX_WAITING_JOBS = 3
    waiting(user, 3)
    response = api.post("/api/jobs/", JOB, format="json")
    assert response.status_code == 429, response.content
    body = response.json()
    assert body == {
        "detail": "you have 3 jobs waiting and may have 3; this request adds 1",
        "quota": "max_waiting_jobs",
        "limit": 3,
        "used": 3,
        "requested": 1,
    }
    assert "Retry-After" not in response.headers
    assert Job.objects.count() == 3, "nothing was made"


def test_other_users_waiting_jobs_do_not_count(api: APIClient, user: Any, settings: Any) -> None:
    settings.QUOTA_MAX_WAITING_JOBS = 1
    waiting(UserFactory.create(), 5)
    assert api.post("/api/jobs/", JOB, format="json").status_code == 201


def test_a_user_row_lifts_or_tightens_the_default(api: APIClient, user: Any, settings: Any) -> None:
    settings.QUOTA_MAX_WAITING_JOBS = 1
    waiting(user, 1)
    quota = UserQuota.objects.create(user=user, max_waiting_jobs=5)
    assert api.post("/api/jobs/", JOB, format="json").status_code == 201
    quota.max_waiting_jobs = 2
    quota.save()
    assert api.post("/api/jobs/", JOB, format="json").status_code == 429
    quota.unlimited = True
    quota.save()
    assert api.post("/api/jobs/", JOB, format="json").status_code == 201


def test_over_the_daily_gpu_budget_is_a_429_with_retry_after_until_midnight_utc(
    api: APIClient, user: Any, settings: Any
) -> None:
    now = timezone.now()
    if (now - utc_day_start(now)).total_seconds() < 200:
        pytest.skip("too close to 00:00 UTC to have spent 100 s today")
    settings.QUOTA_GPU_SECONDS_PER_DAY = 100
    spent_today(user, 120)
    response = api.post("/api/jobs/", JOB, format="json")
    assert response.status_code == 429, response.content
    body = response.json()
    assert body["quota"] == "gpu_seconds_per_day" and body["limit"] == 100 and body["used"] >= 120
    assert "00:00 UTC" in body["detail"]
    to_midnight = (utc_day_start(now) + timedelta(days=1) - now).total_seconds()
    assert abs(int(response.headers["Retry-After"]) - to_midnight) < 5
    assert body["retry_after"] == int(response.headers["Retry-After"])
    assert Job.objects.count() == 1


def test_under_the_daily_gpu_budget_is_accepted(api: APIClient, user: Any, settings: Any) -> None:
    settings.QUOTA_GPU_SECONDS_PER_DAY = 10_000
    spent_today(user, 60)
    assert api.post("/api/jobs/", JOB, format="json").status_code == 201


def test_wait_mode_accepts_the_job_over_the_limit(api: APIClient, user: Any, settings: Any) -> None:
    settings.QUOTA_OVER_LIMIT = "wait"
    settings.QUOTA_MAX_WAITING_JOBS = 1
    settings.QUOTA_GPU_SECONDS_PER_DAY = 1
    waiting(user, 1)
    spent_today(user, 30)
    response = api.post("/api/jobs/", JOB, format="json")
    assert response.status_code == 201, response.content
    assert Job.objects.get(pk=response.json()["id"]).status == JobStatus.QUEUED


def test_a_retry_by_hand_is_checked_too(api: APIClient, user: Any, settings: Any) -> None:
    failed = JobFactory.create(user=user, status=JobStatus.FAILED)
    settings.QUOTA_MAX_WAITING_JOBS = 1
    waiting(user, 1)
    response = api.post(f"/api/jobs/{failed.id}/retry/")
    assert response.status_code == 429, response.content
    assert not Job.objects.filter(retry_of=failed).exists()
    settings.QUOTA_MAX_WAITING_JOBS = 2
    assert api.post(f"/api/jobs/{failed.id}/retry/").status_code in (200, 201)
    assert Job.objects.filter(retry_of=failed).count() == 1


# --- templates and pipelines: a batch of N counts N ---------------------------------------------


@pytest.fixture
def template() -> dict[str, Any]:
    staff = APIClient()
    staff.force_authenticate(publisher_user())
    return publish(staff)


@pytest.fixture
def keyframe(user: Any) -> str:
    return str(asset_of(user, png(16, 12), "kf.png").id)


def batch(keyframe: str, n: int) -> dict[str, Any]:
    return {"inputs": {"keyframe": keyframe}, "batch": [{"inputs": {"seed": seed}} for seed in range(n)]}


def test_a_template_batch_of_n_counts_n(api: APIClient, user: Any, settings: Any, template: Any, keyframe: str) -> None:
    settings.QUOTA_MAX_WAITING_JOBS = 5
    waiting(user, 2)
    response = api.post("/api/templates/keyframe/jobs/", batch(keyframe, 4), format="json")
    assert response.status_code == 429, response.content
    assert response.json()["requested"] == 4 and response.json()["used"] == 2
    assert Job.objects.count() == 2 and not JobGroup.objects.exists(), "no job and no group of the batch"
    response = api.post("/api/templates/keyframe/jobs/", batch(keyframe, 3), format="json")
    assert response.status_code == 201, response.content
    assert Job.objects.filter(user=user).count() == 5


def test_a_template_run_of_one_job_is_checked(
    api: APIClient, user: Any, settings: Any, template: Any, keyframe: str
) -> None:
    settings.QUOTA_MAX_WAITING_JOBS = 1
    waiting(user, 1)
    response = api.post("/api/templates/keyframe/jobs/", {"inputs": {"keyframe": keyframe}}, format="json")
    assert response.status_code == 429, response.content
    assert Job.objects.count() == 1


def image(prefix: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 40, "height": 24, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def pipeline(n: int) -> dict[str, Any]:
    jobs = [{"key": f"k{i}", "workflow": image(f"k{i}")} for i in range(n)]
    return {"name": "shot", "job_type": "image", "jobs": jobs}


def test_a_pipeline_counts_all_its_jobs_and_makes_none_over_the_limit(api: APIClient, user: Any, settings: Any) -> None:
    settings.QUOTA_MAX_WAITING_JOBS = 3
    response = api.post("/api/pipelines/", pipeline(4), format="json")
    assert response.status_code == 429, response.content
    assert response.json()["requested"] == 4
    assert not Job.objects.exists() and not JobGroup.objects.exists()
    assert api.post("/api/pipelines/", pipeline(3), format="json").status_code == 201
    assert Job.objects.filter(user=user).count() == 3


# --- bounded --------------------------------------------------------------------------------------


@pytest.mark.parametrize("history", [0, 200])
def test_the_check_is_at_most_two_queries_whatever_the_history(user: Any, settings: Any, history: int) -> None:
    settings.QUOTA_MAX_WAITING_JOBS = 10_000
    settings.QUOTA_GPU_SECONDS_PER_DAY = 10_000_000
    JobFactory.create_batch(history, user=user, status=JobStatus.COMPLETED)
    waiting(user, 3)
    with CaptureQueriesContext(connection) as queries:
        submit_check(user, 50)
    assert len(queries) == 2


def test_no_limit_at_all_costs_one_query(user: Any) -> None:
    with CaptureQueriesContext(connection) as queries:
        submit_check(user, 1)
    assert len(queries) == 1


def test_the_exception_says_its_reason_where_it_is_shown_as_text(user: Any, settings: Any) -> None:
    settings.QUOTA_MAX_WAITING_JOBS = 1
    waiting(user, 1)
    with pytest.raises(QuotaExceeded) as raised:
        submit_check(user, 2)
    assert str(raised.value) == "you have 1 jobs waiting and may have 1; this request adds 2"


# --- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,value",
    [("QUOTA_MAX_WAITING_JOBS", 0), ("QUOTA_MAX_RUNNING_JOBS", "ten"), ("QUOTA_GPU_SECONDS_PER_DAY", -5)],
)
def test_a_limit_that_is_not_a_positive_number_stops_the_start(settings: Any, name: str, value: Any) -> None:
    setattr(settings, name, value)
    errors = [error for error in run_checks() if error.id == "quotas.E001"]
    assert len(errors) == 1 and name in errors[0].msg


def test_an_unknown_over_limit_mode_stops_the_start(settings: Any) -> None:
    settings.QUOTA_OVER_LIMIT = "queue"
    assert [error.id for error in run_checks() if (error.id or "").startswith("quotas.")] == ["quotas.E002"]


def test_the_comfyui_front_door_is_checked_too(settings: Any, comfyui_sim: Any) -> None:
    from comfy_api.fleet_info import fleet_info_forget
    from comfy_api.models import FrontDoorPrompt
    from tests.factories import api_key_for

    settings.COMFYUI_BACKENDS = {"default": comfyui_sim.url}
    fleet_info_forget()
    artist = UserFactory.create()
    settings.QUOTA_MAX_WAITING_JOBS = 1
    waiting(artist, 1)
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=api_key_for(artist))
    body = json.dumps({"prompt": SLEEP_WORKFLOW, "client_id": "c1"})
    response = client.generic("POST", "/comfy/prompt", body, content_type="")
    assert response.status_code == 429, response.content
    assert response.json()["quota"] == "max_waiting_jobs"
    assert Job.objects.count() == 1 and not FrontDoorPrompt.objects.exists()
