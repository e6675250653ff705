"""Hostile JSON bodies get a 400 with the reason, never a 500, and nothing is stored."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from jobs.models import Job

pytestmark = pytest.mark.django_db

WORKFLOW = (
    '{"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}}, '
    '"2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "%s"}}}'
)


@pytest.fixture
def client(django_user_model) -> APIClient:
    client = APIClient()
    client.force_authenticate(django_user_model.objects.create_user("artist"))
    return client


def post(client: APIClient, body: str):
    raw: Any = body.encode("utf-8", "surrogatepass")  # bytes: the test client sends them as they are
    return client.generic("POST", "/api/jobs/", raw, content_type="application/json")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('{"workflow": ' + "[" * 10_000 + "]" * 10_000 + "}", "nested deeper"),
        ('{"workflow": ' + WORKFLOW % "x\\u0000y" + "}", "NUL"),
        ('{"workflow": ' + WORKFLOW % "x\\ud800y" + "}", "surrogate"),
        ('{"workflow": {"1\\u0000": {}}}', "NUL"),
        ('{"workflow": ', "JSON parse error"),
    ],
)
def test_hostile_json_is_a_400_with_the_reason(client, body, reason):
    response = post(client, body)
    assert response.status_code == 400
    assert reason in response.json()["detail"]
    assert not Job.objects.exists()
