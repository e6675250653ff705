"""Job labels: a name, project, shot and free tags, given with POST /api/jobs/ (or a template run), shown
with the job, filterable and searchable in REST and in the admin's job history."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from jobs.labels import JobLabels
from jobs.models import Job, JobTag
from jobs.services import job_create
from tests.factories import SLEEP_WORKFLOW, UserFactory

pytestmark = pytest.mark.django_db


def labelled(user: Any, name: str, project: str = "", shot: str = "", tags: tuple[str, ...] = (), **extra: Any) -> Job:
    job = job_create(
        user=user,
        workflow=SLEEP_WORKFLOW,
        job_type="image",
        labels=JobLabels(name=name, project=project, shot=shot, tags=tags),
        **extra,
    )
    return job


def ids(response: Any) -> set[str]:
    assert response.status_code == 200, response.content
    return {job["id"] for job in response.json()["results"]}


def test_post_jobs_takes_labels_and_the_job_shows_them(api: APIClient) -> None:
    body = {"workflow": SLEEP_WORKFLOW, "job_type": "image", "name": "fox turnaround", "project": "ep01"}
    response = api.post("/api/jobs/", {**body, "shot": "sh010", "tags": ["fox", "wip", "fox"]}, format="json")
    assert response.status_code == 201, response.content
    job = response.json()
    assert (job["name"], job["project"], job["shot"], job["tags"]) == (
        "fox turnaround",
        "ep01",
        "sh010",
        ["fox", "wip"],
    )
    assert job["template"] is None and job["group"] is None
    assert sorted(JobTag.objects.filter(job_id=job["id"]).values_list("tag", flat=True)) == ["fox", "wip"]
    assert api.get(f"/api/jobs/{job['id']}/").json()["tags"] == ["fox", "wip"]


@pytest.mark.parametrize(
    "labels,where",
    [
        ({"name": "x" * 201}, "name"),
        ({"project": "x" * 101}, "project"),
        ({"shot": "sh\n010"}, "shot"),
        ({"tags": "fox"}, "tags"),
        ({"tags": ["ok", ""]}, "tags"),
        ({"tags": [f"t{n}" for n in range(21)]}, "tags"),
    ],
)
def test_bad_labels_are_a_400_naming_the_field(api: APIClient, labels: dict[str, Any], where: str) -> None:
    response = api.post("/api/jobs/", {"workflow": SLEEP_WORKFLOW, "job_type": "image", **labels}, format="json")
    assert response.status_code == 400 and where in response.json(), response.content
    assert not Job.objects.exists()


def test_rest_filters_by_project_shot_tag_template_group_and_searches(api: APIClient, user: Any) -> None:
    fox = labelled(
        user, "fox turnaround", "ep01", "sh010", ("fox", "wip"), template_name="keyframe", template_version=2
    )
    owl = labelled(user, "owl flight", "ep01", "sh020", ("owl",))
    cat = labelled(user, "cat nap", "ep02", "sh010", ("wip",))
    labelled(UserFactory.create(), "someone else's fox", "ep01", "sh010", ("fox",))
    assert ids(api.get("/api/jobs/?project=ep01")) == {str(fox.id), str(owl.id)}
    assert ids(api.get("/api/jobs/?shot=sh010")) == {str(fox.id), str(cat.id)}
    assert ids(api.get("/api/jobs/?project=ep01&shot=sh010")) == {str(fox.id)}
    assert ids(api.get("/api/jobs/?tag=wip")) == {str(fox.id), str(cat.id)}
    assert ids(api.get("/api/jobs/?tag=wip&project=ep02")) == {str(cat.id)}
    assert ids(api.get("/api/jobs/?template=keyframe&template_version=2")) == {str(fox.id)}
    assert ids(api.get("/api/jobs/?search=owl")) == {str(owl.id)}, "a name prefix"
    assert ids(api.get("/api/jobs/?search=ep02")) == {str(cat.id)}, "a project"
    assert ids(api.get("/api/jobs/?search=sh010")) == {str(fox.id), str(cat.id)}, "a shot"
    assert ids(api.get("/api/jobs/?search=fox")) == {str(fox.id)}, "a tag (and a name)"
    assert ids(api.get("/api/jobs/?search=turnaround")) == set(), "a name matches from its start"
    assert ids(api.get("/api/jobs/?tag=nothing")) == set()


@pytest.fixture
def admin_client() -> Client:
    staff = UserFactory.create(is_staff=True)
    for codename in ("view_job", "view_jobgroup", "change_job"):
        staff.user_permissions.add(Permission.objects.get(codename=codename, content_type__app_label="jobs"))
    client = Client()
    client.force_login(staff)
    return client


def listed(client: Client, query: str) -> set[str]:
    response = client.get(f"/admin/jobs/job/{query}")
    assert response.status_code == 200
    return {str(job.pk) for job in response.context["cl"].result_list}


def test_the_admin_job_list_shows_filters_and_searches_labels(admin_client: Client, user: Any) -> None:
    fox = labelled(user, "fox turnaround", "ep01", "sh010", ("fox",), template_name="keyframe", template_version=3)
    owl = labelled(user, "owl flight", "ep01", "sh020", ("owl",))
    cat = labelled(user, "cat nap", "ep02", "sh010", ("wip",))
    page = admin_client.get("/admin/jobs/job/").content.decode()
    assert "fox turnaround" in page and "ep01 / sh010" in page and "keyframe v3" in page
    assert listed(admin_client, "?project=ep01") == {str(fox.id), str(owl.id)}
    assert listed(admin_client, "?project=ep01&shot=sh010") == {str(fox.id)}
    assert listed(admin_client, "?tag=wip") == {str(cat.id)}
    assert listed(admin_client, "?template=keyframe") == {str(fox.id)}
    assert listed(admin_client, "?template_name=keyframe&template_version=3") == {str(fox.id)}
    assert listed(admin_client, "?q=owl") == {str(owl.id)}
    assert listed(admin_client, "?q=sh010") == {str(fox.id), str(cat.id)}
    assert listed(admin_client, "?q=wip") == {str(cat.id)}
    # The filters' choices are the recent jobs' values.
    assert {"ep01", "ep02"} <= {choice for choice, _ in _choices(admin_client, "project")}
    assert {choice for choice, _ in _choices(admin_client, "shot", "?project=ep02")} == {"sh010"}


def _choices(client: Client, title: str, query: str = "") -> list[tuple[str, str]]:
    response = client.get(f"/admin/jobs/job/{query}")
    (spec,) = [spec for spec in response.context["cl"].filter_specs if getattr(spec, "title", "") == title]
    return list(spec.lookup_choices)


def test_the_admin_job_list_reads_no_more_per_row_with_labels(admin_client: Client, user: Any) -> None:
    def queries_for_a_page() -> int:
        with CaptureQueriesContext(connection) as context:
            assert admin_client.get("/admin/jobs/job/?tag=all&project=ep01").status_code == 200
        return len(context.captured_queries)

    for n in range(3):
        labelled(user, f"job {n}", "ep01", f"sh{n:03d}", (f"t{n}", "all"))
    queries_for_a_page()  # warms what the admin caches across requests
    few = queries_for_a_page()
    for n in range(3, 40):
        labelled(user, f"job {n}", "ep01", f"sh{n:03d}", (f"t{n}", "all"))
    assert queries_for_a_page() == few, "labels, template and group columns are the row's own values"


def test_tags_and_searches_that_name_many_jobs_find_the_same_jobs(api: APIClient, user: Any, monkeypatch: Any) -> None:
    fox = labelled(user, "fox a", "ep01", "sh010", ("fox",))
    fox2 = labelled(user, "fox b", "ep02", "sh020", ("fox",))
    labelled(user, "owl", "ep03", "sh030", ("owl",))
    few = (ids(api.get("/api/jobs/?tag=fox")), ids(api.get("/api/jobs/?search=fox")))
    monkeypatch.setattr("jobs.filters.FEW_JOBS", 1)  # past it: a subquery, not a list of ids
    many = (ids(api.get("/api/jobs/?tag=fox")), ids(api.get("/api/jobs/?search=fox")))
    assert few == many == ({str(fox.id), str(fox2.id)}, {str(fox.id), str(fox2.id)})
