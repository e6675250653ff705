"""Groups of jobs: one progress, one status summed up from the jobs (a retry standing in for the job it
retries), one cancel for all that still wait or run, seen and cancelled as jobs are."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from jobs import services
from jobs.group_summary import MemberState, group_summary
from jobs.labels import JobLabels
from jobs.models import Job, JobGroup, JobStatus
from tests.factories import JobFactory, UserFactory


def member(status: str, progress: float = 0.0, retry_of: uuid.UUID | None = None) -> MemberState:
    return MemberState(uuid.uuid4(), status, progress, retry_of)


@pytest.mark.parametrize(
    "members,status,progress",
    [
        ([member("queued"), member("queued")], "queued", 0.0),
        ([member("running", 0.5), member("queued"), member("queued")], "running", 0.5 / 3),
        ([member("completed", 1.0), member("queued")], "running", 0.5),
        ([member("completed", 1.0), member("completed", 1.0)], "completed", 1.0),
        ([member("completed", 1.0), member("failed", 0.3)], "failed", 1.0),
        ([member("completed", 1.0), member("cancelled", 0.2)], "cancelled", 1.0),
        ([member("running", 1.0), member("running", 1.0)], "running", 0.999),
    ],
)
def test_a_groups_status_and_progress_come_from_its_jobs(
    members: list[MemberState], status: str, progress: float
) -> None:
    summary = group_summary(members)
    assert summary.status == status
    assert summary.progress == pytest.approx(progress)
    assert summary.total == len(members)


def test_a_retried_job_counts_through_its_retry() -> None:
    failed = member("failed", 0.4)
    retry = member("completed", 1.0, retry_of=failed.id)
    summary = group_summary([member("completed", 1.0), failed, retry])
    assert (summary.status, summary.total, summary.counts) == ("completed", 2, {"completed": 2})


def make_group(user: Any, statuses: list[str], **labels: Any) -> JobGroup:
    group = JobGroup.objects.create(user=user, **labels)
    for place, status in enumerate(statuses):
        progress = {"completed": 1.0, "running": 0.5}.get(status, 0.0)
        JobFactory.create(user=user, group=group, status=status, progress=progress, name=f"#{place + 1}")
    return group


@pytest.mark.django_db
def test_a_group_shows_its_progress_status_counts_and_jobs(api: APIClient, user: Any) -> None:
    group = make_group(user, ["completed", "running", "queued", "queued"], name="sweep", project="ep01")
    body = api.get(f"/api/groups/{group.id}/").json()
    assert (body["status"], body["progress"], body["progress_percent"]) == ("running", 0.375, 37.5)
    assert body["counts"] == {"completed": 1, "running": 1, "queued": 2} and body["jobs_total"] == 4
    assert [job["name"] for job in body["jobs"]] == ["#1", "#2", "#3", "#4"]
    assert body["jobs"][1]["url"] == f"/api/jobs/{body['jobs'][1]['id']}/"
    listed = api.get("/api/groups/?project=ep01").json()["results"]
    assert [g["id"] for g in listed] == [str(group.id)] and "jobs" not in listed[0]
    assert api.get("/api/groups/?project=ep02").json()["results"] == []


@pytest.mark.django_db
def test_others_groups_are_hidden_unless_staff_may_view_jobs(api: APIClient) -> None:
    theirs = make_group(UserFactory.create(), ["queued"])
    assert api.get(f"/api/groups/{theirs.id}/").status_code == 404
    assert api.post(f"/api/groups/{theirs.id}/cancel/").status_code == 404
    viewer = UserFactory.create(is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_job", content_type__app_label="jobs"))
    staff = APIClient()
    staff.force_authenticate(viewer)
    assert staff.get(f"/api/groups/{theirs.id}/").status_code == 200
    assert staff.post(f"/api/groups/{theirs.id}/cancel/").status_code == 403, "viewing is not changing"
    assert Job.objects.get(group=theirs).status == JobStatus.QUEUED


@pytest.mark.django_db
def test_cancel_stops_every_waiting_and_running_job_and_leaves_ended_ones(
    api: APIClient, user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    group = make_group(user, ["completed", "running", "queued", "queued"])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = api.post(f"/api/groups/{group.id}/cancel/")
    assert response.status_code == 202, response.content
    statuses = dict(Job.objects.filter(group=group).values_list("name", "status"))
    assert statuses == {"#1": "completed", "#2": "running", "#3": "cancelled", "#4": "cancelled"}
    running = Job.objects.get(group=group, name="#2")
    assert running.cancel_requested_at is not None, "the running job's tracker is asked to stop it"
    assert response.json()["counts"] == {"completed": 1, "running": 1, "cancelled": 2}
    assert len([c for c in callbacks if "queue_announce_soon" in c.__qualname__]) == 1, "the queue is announced once"

    services.job_close(running, JobStatus.CANCELLED)  # what its tracker does
    assert api.post(f"/api/groups/{group.id}/cancel/").status_code == 409
    assert api.get(f"/api/groups/{group.id}/").json()["status"] == "cancelled"


@pytest.mark.django_db
def test_cancelling_only_waiting_jobs_ends_the_group_at_once(api: APIClient, user: Any) -> None:
    group = make_group(user, ["queued", "queued"])
    response = api.post(f"/api/groups/{group.id}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"


@pytest.mark.django_db
def test_a_retry_stays_in_the_group_with_the_same_labels_and_template(api: APIClient, user: Any) -> None:
    group = make_group(user, ["completed", "failed"])
    failed = Job.objects.get(group=group, status=JobStatus.FAILED)
    Job.objects.filter(pk=failed.pk).update(
        project="ep01", shot="sh010", tags=["a"], template_name="keyframe", template_version=2
    )
    retry = api.post(f"/api/jobs/{failed.id}/retry/").json()
    assert (retry["group"], retry["project"], retry["shot"], retry["tags"]) == (str(group.id), "ep01", "sh010", ["a"])
    assert retry["template"] == {"name": "keyframe", "version": 2} and retry["name"] == "#2"
    body = api.get(f"/api/groups/{group.id}/").json()
    assert (body["status"], body["counts"]) == ("running", {"completed": 1, "queued": 1})
    assert len(body["jobs"]) == 3, "the retried job stays listed"


@pytest.mark.django_db
def test_a_group_made_by_the_service_is_all_or_nothing(user: Any, monkeypatch: Any) -> None:
    from jobs.groups import GroupMember, job_group_create
    from tests.factories import SLEEP_WORKFLOW

    made: list[uuid.UUID] = []

    def record_then_fail(*, job_id: uuid.UUID, **kwargs: Any) -> None:
        made.append(job_id)
        if len(made) == 2:
            raise RuntimeError("boom: the second job cannot be made")

    monkeypatch.setattr(services, "asset_uses_record", record_then_fail)
    with pytest.raises(RuntimeError, match="boom"):
        job_group_create(
            user=user, members=[GroupMember(SLEEP_WORKFLOW)] * 3, job_type="image", labels=JobLabels(name="g")
        )
    assert len(made) == 2
    assert not JobGroup.objects.exists() and not Job.objects.exists()
