"""REST: bad input gets a 400 with the reason; users see their own jobs; cancel of a waiting job."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from jobs.models import Job, JobStatus
from tests.factories import SLEEP_WORKFLOW, JobFactory, UserFactory

pytestmark = pytest.mark.django_db


def post_job(api: APIClient, **overrides):
    body = {"workflow": SLEEP_WORKFLOW, "job_type": "image", "priority": 5, **overrides}
    return api.post("/api/jobs/", body, format="json")


def test_anonymous_requests_are_refused():
    assert APIClient().get("/api/jobs/").status_code in (401, 403)


def test_create_returns_the_job_and_its_websocket(api, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post_job(api, priority=7)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "queued" and body["priority"] == 7
    assert body["backend"] == "" and body["waiting_for"] == "a free backend", "bound only when a backend takes it"
    assert body["prompt_id"] == body["id"]
    assert body["websocket_url"].startswith("ws://") and body["websocket_url"].endswith(f"/ws/jobs/{body['id']}/")
    assert Job.objects.get(pk=body["id"]).workflow == SLEEP_WORKFLOW
    wakes = [c for c in callbacks if "_send_on_commit" in c.__qualname__]
    assert len(wakes) == 1, "the idle backend is woken once, after the commit"


@pytest.mark.parametrize(
    "overrides,reason",
    [
        ({"workflow": []}, "non-empty object"),
        ({"workflow": {"nodes": [], "links": []}}, "UI-format"),
        ({"workflow": {"1": {"inputs": {}}}}, "class_type"),
        ({"workflow": {"1": {"class_type": "SaveImage", "inputs": {"images": ["9", 0]}}}}, "missing node 9"),
        ({"workflow": {"1": {"class_type": "KSampler", "inputs": {"steps": 100000}}}}, "steps"),
        (
            {"workflow": {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 100000, "height": 100000}}}},
            "pixels",
        ),
        ({"job_type": "hologram"}, "unknown job type"),
        ({"priority": 42}, "less than or equal to 9"),
        ({"backend": "gpu-that-does-not-exist"}, "unknown backend"),
    ],
)
def test_bad_input_is_a_400_with_the_reason(api, overrides, reason):
    response = post_job(api, **overrides)
    assert response.status_code == 400
    assert reason in response.content.decode()
    assert not Job.objects.exists(), "nothing is created from bad input"


def test_body_that_is_not_json_is_a_400(api):
    response = api.post("/api/jobs/", "{not json", content_type="application/json")
    assert response.status_code == 400


def test_users_see_only_their_own_jobs_and_staff_see_all(api, user):
    mine = JobFactory.create(user=user)
    theirs = JobFactory.create(user=UserFactory.create())
    ids = {j["id"] for j in api.get("/api/jobs/").json()["results"]}
    assert ids == {str(mine.id)}
    assert api.get(f"/api/jobs/{theirs.id}/").status_code == 404
    staff_user = UserFactory.create(is_staff=True)
    staff_user.user_permissions.add(Permission.objects.get(codename="view_job", content_type__app_label="jobs"))
    staff = APIClient()
    staff.force_authenticate(staff_user)
    assert {j["id"] for j in staff.get("/api/jobs/").json()["results"]} == {str(mine.id), str(theirs.id)}


def test_list_filters_by_status_and_type(api, user):
    JobFactory.create(user=user, job_type="video")
    done = JobFactory.create(user=user, job_type="image", status=JobStatus.COMPLETED)
    results = api.get("/api/jobs/?status=completed&job_type=image").json()["results"]
    assert [j["id"] for j in results] == [str(done.id)]


def test_list_is_paginated_by_cursor(api, user):
    JobFactory.create_batch(3, user=user)
    page = api.get("/api/jobs/?page_size=2").json()
    assert len(page["results"]) == 2 and page["next"]
    rest = api.get(page["next"]).json()
    assert len(rest["results"]) == 1


def test_unknown_or_malformed_job_id_is_a_404(api):
    assert api.get("/api/jobs/not-a-uuid/").status_code == 404
    assert api.post("/api/jobs/00000000-0000-0000-0000-000000000000/cancel/").status_code == 404


def test_cancel_a_waiting_job_cancels_it_at_once(api, user):
    job = JobFactory.create(user=user)
    response = api.post(f"/api/jobs/{job.id}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and job.finished_at is not None


def test_cancel_a_running_job_asks_its_tracker(api, user):
    job = JobFactory.create(user=user, status=JobStatus.RUNNING)
    response = api.post(f"/api/jobs/{job.id}/cancel/")
    assert response.status_code == 202 and response.json()["cancel_requested"] is True
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING and job.cancel_requested_at is not None


def test_cancel_a_finished_job_is_a_conflict(api, user):
    job = JobFactory.create(user=user, status=JobStatus.COMPLETED)
    response = api.post(f"/api/jobs/{job.id}/cancel/")
    assert response.status_code == 409 and "already completed" in response.json()["detail"]


def test_queue_position_follows_priority_then_age_in_the_fleets_one_queue(api, user):
    older = JobFactory.create(user=user, priority=5)
    newer = JobFactory.create(user=user, priority=5)
    urgent = JobFactory.create(user=user, priority=9)
    pinned = JobFactory.create(user=user, priority=9, requested_backend="default")
    positions = {j["id"]: j["queue_position"] for j in api.get("/api/jobs/").json()["results"]}
    assert positions[str(urgent.id)] == 1 and positions[str(pinned.id)] == 2, "waiting jobs share one queue"
    assert positions[str(older.id)] == 3 and positions[str(newer.id)] == 4
    api.post(f"/api/jobs/{urgent.id}/cancel/")
    assert api.get(f"/api/jobs/{newer.id}/").json()["queue_position"] == 3
