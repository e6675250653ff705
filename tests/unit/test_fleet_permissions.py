"""Fleet-wide pages and figures follow the same permissions in the admin and in REST."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

pytestmark = pytest.mark.django_db

PAGES = ["/admin/dashboard/statistics/", "/admin/dashboard/failures/", "/admin/dashboard/live-queue/"]


def staff_client(django_user_model, *codenames: str) -> Client:
    user = django_user_model.objects.create_user("lead", password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def test_staff_without_the_permission_see_no_fleet_page(django_user_model):
    client = staff_client(django_user_model)
    for url in [*PAGES, "/admin/dashboard/backends/"]:
        assert client.get(url).status_code == 403, url


def test_staff_who_may_view_jobs_see_the_fleet_pages(django_user_model):
    client = staff_client(django_user_model, "view_job", "view_backend")
    for url in [*PAGES, "/admin/dashboard/backends/"]:
        assert client.get(url).status_code == 200, url


def test_draining_needs_the_change_permission(django_user_model):
    client = staff_client(django_user_model, "view_backend")
    assert client.post("/admin/dashboard/backends/default/drain/", {"draining": "1"}).status_code == 403


def test_the_dashboard_address_leads_to_the_statistics(admin_client):
    response = admin_client.get("/admin/dashboard/")
    assert response.status_code == 302
    assert response["Location"] == "/admin/dashboard/statistics/"
