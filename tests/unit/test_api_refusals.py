"""Refusals the schemathesis run (tests/integration/test_api_schema_live.py) found answered wrongly:
each is now JSON, and says what the schema says."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from tests.factories import UserFactory, api_key_for
from tests.media_files import png

pytestmark = pytest.mark.django_db


@pytest.fixture
def api() -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=api_key_for(UserFactory.create()))
    return client


def test_a_field_given_twice_in_a_form_is_refused_not_silently_dropped(api: APIClient, settings, tmp_path) -> None:
    settings.MEDIA_ROOT = tmp_path
    upload = api.post("/api/assets/", {"file": SimpleUploadedFile("k.png", png(4, 4)), "name": ["one", "two"]})
    assert upload.status_code == 400 and upload.json() == {"name": ["given more than once; give it once"]}
    key = api.post("/api/keys/", "name=a&name=b", content_type="application/x-www-form-urlencoded")
    assert key.status_code == 400 and "name" in key.json()
    job = api.post("/api/jobs/", "job_type=image&job_type=video", content_type="application/x-www-form-urlencoded")
    assert job.status_code == 400 and job.json()["job_type"] == ["given more than once; give it once"]
    once = api.post("/api/assets/", {"file": SimpleUploadedFile("k.png", png(4, 4)), "name": "one"})
    assert once.status_code == 201 and once.json()["name"] == "one"


@pytest.mark.parametrize(
    "url", ["/api/jobs/0.5/", "/api/jobs/0.5/attempts/", "/api/assets/x.y/content/", "/api/keys/0.5/", "/api/nothing/"]
)
def test_an_api_url_no_route_takes_is_a_json_404(api: APIClient, url: str) -> None:
    for answer in (api.get(url), api.delete(url), api.post(url)):
        assert answer.status_code == 404 and answer["Content-Type"] == "application/json", url
        assert "detail" in answer.json()


def test_a_list_filter_given_empty_means_any(api: APIClient) -> None:
    assert api.get("/api/jobs/?status=&failure_category=&group=&template_version=").status_code == 200
    assert api.get("/api/jobs/?status=bogus").status_code == 400
    assert api.get("/api/jobs/?page_size=0").status_code == 400


def test_a_page_size_given_empty_is_a_400_as_the_schema_says_an_integer(api: APIClient) -> None:
    for url in ("/api/jobs/?page_size=", "/api/assets/?page_size="):
        answer = api.get(url)
        assert answer.status_code == 400 and "page_size" in answer.json(), url


def test_a_template_version_filter_takes_whole_numbers_the_column_holds(api: APIClient) -> None:
    assert api.get("/api/jobs/?template_version=2").status_code == 200
    for refused in ("1.5", "0", str(2**31), "x"):
        answer = api.get(f"/api/jobs/?template_version={refused}")
        assert answer.status_code == 400 and "template_version" in answer.json(), refused


def test_a_group_filter_takes_a_uuid_as_it_is_written(api: APIClient) -> None:
    assert api.get("/api/jobs/?group=12345678-1234-5678-1234-567812345678").status_code == 200
    for refused in ("12345678123456781234567812345678", "{12345678-1234-5678-1234-567812345678}", "x"):
        answer = api.get(f"/api/jobs/?group={refused}")
        assert answer.status_code == 400 and "group" in answer.json(), refused
