"""A browser's session reaches the front door's unsafe methods only with the session's CSRF token, at
the site's root aliases as under /comfy/ (a page on another site could otherwise queue, cancel, delete
or upload as the logged-in artist), and the root aliases leave the project's own URLs alone."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from django.urls import resolve

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

UNSAFE = [
    ("POST", "prompt"),
    ("POST", "queue"),
    ("POST", "history"),
    ("POST", "interrupt"),
    ("POST", "upload/image"),
    ("POST", "upload/mask"),
    ("POST", "settings"),
    ("POST", "settings/Comfy.Foo"),
    ("POST", "userdata/workflows%2Fx.json"),
    ("DELETE", "userdata/workflows%2Fx.json"),
]


@pytest.fixture
def browser() -> Client:
    user: Any = UserFactory()
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


@pytest.mark.parametrize("prefix", ["/", "/comfy/", "/comfy/api/"])
@pytest.mark.parametrize(("method", "path"), UNSAFE)
def test_a_session_without_the_csrf_token_changes_nothing(browser, prefix, method, path):
    response = browser.generic(method, prefix + path, json.dumps({"clear": True, "prompt": {}}), content_type="")
    assert response.status_code == 403, f"{method} {prefix}{path}: {response.status_code} {response.content[:200]!r}"
    assert b"CSRF" in response.content


@pytest.mark.parametrize(
    "path", ["/admin/", "/admin/login/", "/metrics", "/api/jobs/", "/api/stats/", "/api/schema/", "/api/quotas/"]
)
def test_the_root_aliases_shadow_none_of_the_projects_urls(path):
    assert not resolve(path).func.__module__.startswith("comfy_api"), path
