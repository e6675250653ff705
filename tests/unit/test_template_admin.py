"""The admin: templates with their versions (workflow, inputs and schema read-only), groups of jobs
with their progress, status and jobs, and a cancel for what still waits or runs."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from rest_framework.test import APIClient

from jobs.models import Job, JobGroup, JobStatus
from tests.factories import JobFactory, UserFactory
from tests.template_workflows import publish, publisher_user
from workflow_templates.models import TemplateVersion, WorkflowTemplate

pytestmark = pytest.mark.django_db


def staff_client(*codenames: str) -> Client:
    staff = UserFactory.create(is_staff=True)
    for codename in codenames:
        staff.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def published() -> WorkflowTemplate:
    api = APIClient()
    api.force_authenticate(publisher_user())
    publish(api, description="keyframe to shot")
    publish(api, notes="karras")
    return WorkflowTemplate.objects.get(name="keyframe")


def test_a_template_page_lists_its_versions_and_a_version_page_shows_it_read_only(published: WorkflowTemplate) -> None:
    client = staff_client("view_workflowtemplate", "change_workflowtemplate", "view_templateversion")
    listing = client.get("/admin/workflow_templates/workflowtemplate/").content.decode()
    assert "keyframe" in listing and "keyframe to shot" in listing
    page = client.get(f"/admin/workflow_templates/workflowtemplate/{published.pk}/change/").content.decode()
    assert ">v1<" in page and ">v2<" in page and "karras" in page
    assert (
        "add/" not in client.get("/admin/workflow_templates/workflowtemplate/").content.decode().split("changelist")[0]
    )

    version = TemplateVersion.objects.get(template=published, number=1)
    response = client.get(f"/admin/workflow_templates/templateversion/{version.pk}/change/")
    text = response.content.decode()
    assert response.status_code == 200
    assert "template-inputs" in text and "keyframe" in text and "0 .. 4294967295" in text
    assert "json-schema.org" in text and "CheckpointLoaderSimple" in text
    assert "template_name=keyframe&amp;template_version=1" in text, "a link to the jobs that ran it"
    assert 'name="_save"' not in text, "a version has no save button: it never changes"
    assert client.post(f"/admin/workflow_templates/templateversion/{version.pk}/change/", {}).status_code == 403


def test_the_admin_cannot_add_or_delete_templates(published: WorkflowTemplate) -> None:
    client = staff_client(
        "add_workflowtemplate", "view_workflowtemplate", "delete_workflowtemplate", "delete_templateversion"
    )
    assert client.get("/admin/workflow_templates/workflowtemplate/add/").status_code == 403
    assert client.get(f"/admin/workflow_templates/workflowtemplate/{published.pk}/delete/").status_code == 403
    version = TemplateVersion.objects.filter(template=published).first()
    assert version is not None
    assert client.get(f"/admin/workflow_templates/templateversion/{version.pk}/delete/").status_code == 403


def test_a_group_page_shows_progress_status_and_its_jobs() -> None:
    owner = UserFactory.create()
    group = JobGroup.objects.create(user=owner, name="fox sweep", project="ep01")
    for name, status, progress in [("#1", "completed", 1.0), ("#2", "running", 0.5), ("#3", "queued", 0.0)]:
        JobFactory.create(
            user=owner, group=group, name=name, status=status, progress=progress, template_name="keyframe"
        )
    client = staff_client("view_jobgroup")
    listing = client.get("/admin/jobs/jobgroup/").content.decode()
    assert "fox sweep" in listing and "running" in listing and 'title="50%"' in listing
    page = client.get(f"/admin/jobs/jobgroup/{group.pk}/change/").content.decode()
    assert "group-jobs" in page and "#1" in page and "#3" in page and "1 completed, 1 queued, 1 running" in page


def test_the_group_cancel_action_needs_the_permission_to_change_jobs() -> None:
    owner = UserFactory.create()
    group = JobGroup.objects.create(user=owner, name="g")
    JobFactory.create_batch(2, user=owner, group=group, status=JobStatus.QUEUED)
    body = {"action": "cancel_groups", "_selected_action": [str(group.pk)]}
    viewer = staff_client("view_jobgroup")
    viewer.post("/admin/jobs/jobgroup/", body)
    assert set(Job.objects.values_list("status", flat=True)) == {"queued"}
    changer = staff_client("view_jobgroup", "change_job")
    assert changer.post("/admin/jobs/jobgroup/", body).status_code == 302
    assert set(Job.objects.values_list("status", flat=True)) == {"cancelled"}


def test_a_jobs_page_shows_its_labels_template_and_group(user: Any) -> None:
    group = JobGroup.objects.create(user=user)
    job = JobFactory.create(
        user=user,
        group=group,
        name="take 3",
        project="ep01",
        shot="sh010",
        tags=["best"],
        template_name="kf",
        template_version=4,
    )
    page = staff_client("view_job").get(f"/admin/jobs/job/{job.pk}/change/").content.decode()
    assert "take 3" in page and "sh010" in page and "best" in page and "kf v4" in page
    assert f"/admin/jobs/jobgroup/{group.pk}/change/" in page
