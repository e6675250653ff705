"""REST and websockets enforce the admin's model permissions.

Everyone sees and acts on their own jobs. Other users' jobs: seeing them needs staff and the
permission to view jobs (or to change them, as in the admin); cancelling or retrying them needs staff
and the permission to change jobs. A job one may not see is a 404, one seen but not changeable a 403.
"""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.contrib.auth.models import Permission
from django.core.files.base import ContentFile
from rest_framework.test import APIClient

from jobs import services
from jobs.models import FailureCategory, Job, JobAttempt, JobOutput, JobStatus
from tests.factories import JobFactory, UserFactory, api_key_for
from tests.unit.test_websocket import communicator, with_key

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64

# who -> (is_staff, permissions)
PEOPLE: dict[str, tuple[bool, tuple[str, ...]]] = {
    "artist": (False, ()),
    "artist-with-permissions": (False, ("view_job", "change_job")),
    "staff": (True, ()),
    "staff-view": (True, ("view_job",)),
    "staff-change": (True, ("change_job",)),
    "staff-view-change": (True, ("view_job", "change_job")),
}
SEES_OTHERS = {"staff-view", "staff-change", "staff-view-change"}
CHANGES_OTHERS = {"staff-change", "staff-view-change"}


def person(who: str) -> Any:
    is_staff, codenames = PEOPLE[who]
    user = UserFactory.create(is_staff=is_staff)
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename, content_type__app_label="jobs"))
    return user


def client_for(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def someone_elses_job(status: str = JobStatus.QUEUED) -> Job:
    job = JobFactory.create(user=UserFactory.create(), status=status)
    if status == JobStatus.FAILED:
        Job.objects.filter(pk=job.pk).update(failure_category=FailureCategory.NODE_ERROR)
    return job


@pytest.mark.django_db
@pytest.mark.parametrize("who", PEOPLE)
def test_reading_other_users_jobs(who: str, settings: Any, tmp_path: Any) -> None:
    settings.MEDIA_ROOT = tmp_path
    job = someone_elses_job(JobStatus.COMPLETED)
    JobAttempt.objects.create(job=job, number=1, prompt_id=job.id, backend="default")
    output = JobOutput.objects.create(
        job=job, node_id="9", kind="images", comfy_filename="fox.png", media_type="image/png", size_bytes=len(PNG)
    )
    output.file.save("fox.png", ContentFile(PNG))
    api = client_for(person(who))
    expected = 200 if who in SEES_OTHERS else 404
    for url in (
        f"/api/jobs/{job.id}/",
        f"/api/jobs/{job.id}/events/",
        f"/api/jobs/{job.id}/attempts/",
        f"/api/jobs/{job.id}/outputs/{output.pk}/",
    ):
        assert api.get(url).status_code == expected, url
    listed = {item["id"] for item in api.get("/api/jobs/").json()["results"]}
    assert (str(job.id) in listed) == (who in SEES_OTHERS)


@pytest.mark.django_db
@pytest.mark.parametrize("who", PEOPLE)
def test_cancelling_other_users_jobs(who: str) -> None:
    job = someone_elses_job()
    response = client_for(person(who)).post(f"/api/jobs/{job.id}/cancel/")
    job.refresh_from_db()
    if who in CHANGES_OTHERS:
        assert response.status_code == 200 and job.status == JobStatus.CANCELLED
    else:
        assert response.status_code == (403 if who in SEES_OTHERS else 404)
        assert job.status == JobStatus.QUEUED, "the job was cancelled by someone not allowed to"
    if response.status_code == 403:
        assert "permission to change jobs" in response.json()["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize("who", PEOPLE)
def test_retrying_other_users_jobs(who: str) -> None:
    job = someone_elses_job(JobStatus.FAILED)
    response = client_for(person(who)).post(f"/api/jobs/{job.id}/retry/")
    if who in CHANGES_OTHERS:
        assert response.status_code == 201
        assert Job.objects.get(retry_of=job).user_id == job.user_id, "a retry stays the owner's job"
    else:
        assert response.status_code == (403 if who in SEES_OTHERS else 404)
        assert not Job.objects.filter(retry_of=job).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("who", PEOPLE)
def test_everyone_acts_on_their_own_jobs(who: str) -> None:
    user = person(who)
    api = client_for(user)
    waiting = JobFactory.create(user=user)
    failed = JobFactory.create(user=user, status=JobStatus.FAILED, failure_category=FailureCategory.NODE_ERROR)
    assert api.get(f"/api/jobs/{waiting.id}/").status_code == 200
    assert api.post(f"/api/jobs/{waiting.id}/cancel/").status_code == 200
    assert api.post(f"/api/jobs/{failed.id}/retry/").status_code == 201


# --- websockets: the same rule ---------------------------------------------------------------------


def connect_to(path: str, key: str) -> tuple[bool, Any]:
    async def scenario() -> tuple[bool, Any]:
        ws = communicator(path, with_key(key))
        connected, code = await ws.connect()
        first = await ws.receive_json_from(timeout=5) if connected else code
        await ws.disconnect()
        return connected, first

    return async_to_sync(scenario)()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("who", PEOPLE)
def test_one_jobs_socket_follows_the_same_rule(who: str) -> None:
    job = someone_elses_job()
    connected, first = connect_to(f"/ws/jobs/{job.id}/", api_key_for(person(who)))
    if who in SEES_OTHERS:
        assert connected and first["job"]["id"] == str(job.id)
    else:
        assert (connected, first) == (False, 4404)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("who", ["staff", "staff-view"])
def test_the_staff_feed_needs_the_permission(who: str) -> None:
    user = person(who)
    mine, theirs = JobFactory.create(user=user), someone_elses_job()
    token = api_key_for(user)

    async def scenario() -> tuple[list[str], set[str]]:
        ws = communicator("/ws/jobs/", with_key(token))
        assert (await ws.connect())[0]
        snapshot = await ws.receive_json_from(timeout=5)
        await database_sync_to_async(services.job_transition)(theirs, JobStatus.SUBMITTED)
        await database_sync_to_async(services.job_transition)(mine, JobStatus.SUBMITTED)
        updated: set[str] = set()
        while str(mine.id) not in updated or (who == "staff-view" and str(theirs.id) not in updated):
            updated.add((await ws.receive_json_from(timeout=5))["job"]["id"])
        while not await ws.receive_nothing(timeout=0.3):
            updated.add((await ws.receive_json_from(timeout=5))["job"]["id"])
        await ws.disconnect()
        return [job["id"] for job in snapshot["jobs"]], updated

    snapshot, updated = async_to_sync(scenario)()
    if who == "staff-view":
        assert set(snapshot) == updated == {str(mine.id), str(theirs.id)}
    else:
        assert snapshot == [str(mine.id)] and updated == {str(mine.id)}, "another user's job reached the socket"
