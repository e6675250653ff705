"""Usage per user: the admin page and GET /api/quotas/ for staff with quotas.view_usage (403 for anyone
else), GET /api/quotas/me/ for each user's own; sortable, paginated, and a constant number of queries
whatever the number of users."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from jobs.models import JobStatus
from quotas.models import UserQuota
from tests.factories import JobFactory, UserFactory

pytestmark = pytest.mark.django_db

PAGE = "/admin/quotas/userquota/usage/"


@pytest.fixture(autouse=True)
def _defaults(settings: Any) -> None:
    settings.QUOTA_OVER_LIMIT = "reject"
    settings.QUOTA_MAX_RUNNING_JOBS = 2
    settings.QUOTA_MAX_WAITING_JOBS = 10
    settings.QUOTA_GPU_SECONDS_PER_DAY = None


def staff(*codenames: str, username: str = "lead") -> Any:
    user = UserFactory.create(username=username, is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


def browser(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def rest(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def busy(username: str, *, running: int = 0, waiting: int = 0) -> Any:
    user = UserFactory.create(username=username)
    JobFactory.create_batch(running, user=user, status=JobStatus.RUNNING, started_at=timezone.now())
    JobFactory.create_batch(waiting, user=user, status=JobStatus.QUEUED)
    return user


# --- who may see what -----------------------------------------------------------------------------


def test_staff_without_the_permission_get_403_on_the_page_and_in_rest() -> None:
    lead = staff("view_job", "view_userquota")
    assert browser(lead).get(PAGE).status_code == 403
    assert rest(lead).get("/api/quotas/").status_code == 403


def test_a_user_who_is_not_staff_gets_403_in_rest_and_the_login_page_in_the_admin() -> None:
    artist = busy("artist", running=1)
    assert rest(artist).get("/api/quotas/").status_code == 403
    response = browser(artist).get(PAGE)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_anonymous_requests_see_nothing() -> None:
    assert APIClient().get("/api/quotas/me/").status_code in (401, 403)
    assert APIClient().get("/api/quotas/").status_code in (401, 403)


def test_a_user_sees_only_their_own_usage_and_limits() -> None:
    artist = busy("artist", running=2, waiting=3)
    busy("other", running=1, waiting=7)
    UserQuota.objects.create(user=artist, max_waiting_jobs=4)
    response = rest(artist).get("/api/quotas/me/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["username"] == "artist"
    assert body["usage"]["running"] == 2 and body["usage"]["waiting"] == 3
    assert body["limits"] == {"max_running_jobs": 2, "max_waiting_jobs": 4, "gpu_seconds_per_day": None}
    assert body["own_limits"] is True and body["may_start_now"] is False, "at the running limit of 2"
    assert body["used_fractions"] == {"max_running_jobs": 1.0, "max_waiting_jobs": 0.75}
    assert body["over_limit"] == "reject" and body["day_started_at"].endswith(("T00:00:00Z", "T00:00:00+00:00"))


# --- everyone's usage -----------------------------------------------------------------------------


def test_staff_with_the_permission_see_everyone_closest_to_a_limit_first() -> None:
    busy("calm", running=0, waiting=1)
    busy("full", running=2, waiting=0)
    busy("half", running=1, waiting=0)
    idle = UserFactory.create(username="idle")
    UserQuota.objects.create(user=idle, unlimited=True)
    response = rest(staff("view_usage")).get("/api/quotas/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert [row["username"] for row in body["results"]] == ["full", "half", "calm", "idle"]
    assert body["count"] == 4 and body["pages"] == 1
    idle_row = body["results"][-1]
    assert idle_row["own_limits"] is True and idle_row["closeness"] is None
    assert idle_row["limits"] == {"max_running_jobs": None, "max_waiting_jobs": None, "gpu_seconds_per_day": None}


def test_rest_sorts_and_pages() -> None:
    for n in range(5):
        busy(f"user{n}", waiting=n + 1)
    client = rest(staff("view_usage"))
    body = client.get("/api/quotas/", {"ordering": "waiting", "page_size": "2", "page": "2"}).json()
    assert [row["username"] for row in body["results"]] == ["user2", "user3"]
    assert (body["count"], body["page"], body["pages"]) == (5, 2, 3)
    assert client.get("/api/quotas/", {"ordering": "password"}).status_code == 400
    assert client.get("/api/quotas/", {"ordering": ""}).status_code == 400, "a blank ordering is no column"
    assert client.get("/api/quotas/", {"page_size": "0"}).status_code == 400
    assert client.get("/api/quotas/", {"page": "9"}).status_code == 404


def test_the_admin_page_lists_users_with_their_limits_sorted_by_the_column_asked() -> None:
    busy("few", waiting=1)
    busy("many", waiting=9)
    busy("some", waiting=4)
    client = browser(staff("view_usage"))
    response = client.get(PAGE, {"o": "-waiting"})
    assert response.status_code == 200
    html = response.content.decode()
    assert html.index('data-user="many"') < html.index('data-user="some"') < html.index('data-user="few"')
    assert "9 / 10" in html, "the waiting jobs beside the limit"
    ascending = client.get(PAGE, {"o": "waiting"}).content.decode()
    assert ascending.index('data-user="few"') < ascending.index('data-user="many"')


def test_the_page_and_rest_cost_the_same_queries_for_3_and_60_users() -> None:
    lead = staff("view_usage")
    page, api = browser(lead), rest(lead)
    page.get(PAGE), api.get("/api/quotas/")  # the session and the permissions, read once per client
    counts = []
    for users in (3, 60):
        for n in range(users - UserQuota.objects.count()):
            user = busy(f"u{users}-{n}", running=1, waiting=1)
            UserQuota.objects.create(user=user, max_waiting_jobs=5)
        with CaptureQueriesContext(connection) as on_page:
            assert page.get(PAGE, {"o": "username", "p": 2 if users > 50 else 1}).status_code == 200
        with CaptureQueriesContext(connection) as in_rest:
            assert api.get("/api/quotas/").status_code == 200
        counts.append((len(on_page), len(in_rest)))
    assert counts[0] == counts[1], counts


def test_editing_limits_is_the_models_own_permission() -> None:
    viewer = browser(staff("view_usage", "view_userquota", username="viewer"))
    assert viewer.get("/admin/quotas/userquota/add/").status_code == 403
    editor = browser(staff("view_usage", "view_userquota", "add_userquota", username="editor"))
    artist = UserFactory.create(username="artist")
    response = editor.post(
        "/admin/quotas/userquota/add/",
        {"user": artist.pk, "max_running_jobs": "3", "max_waiting_jobs": "", "gpu_seconds_per_day": "", "note": "x"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    quota = UserQuota.objects.get(user=artist)
    assert (quota.max_running_jobs, quota.max_waiting_jobs) == (3, None)
    listing = editor.get("/admin/quotas/userquota/")
    assert listing.status_code == 200 and PAGE in listing.content.decode()
