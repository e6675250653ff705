"""Websocket tickets: `POST /api/ws-tickets/` gives a short-lived, single-use ticket bound to its user,
and `?ticket=` opens one websocket with it; an API key in the URL (`?token=`) is refused by default."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.cache import cache
from rest_framework.test import APIClient

from access.ws_tickets import ws_ticket_issue
from jobs.consumers import CLOSE_NOT_FOUND, CLOSE_UNAUTHENTICATED
from tests.factories import JobFactory, UserFactory, api_key_for
from tests.unit.test_websocket import ORIGIN, communicator, with_key

pytestmark = pytest.mark.django_db(transaction=True)


def ticket_for(user: Any) -> dict[str, Any]:
    api = APIClient()
    api.credentials(HTTP_X_API_KEY=api_key_for(user))
    response = api.post("/api/ws-tickets/")
    assert response.status_code == 201, response.content
    return response.json()


async def handshake(path: str, headers: list[tuple[bytes, bytes]] = ORIGIN) -> tuple[bool, Any]:
    """(accepted, the first message's type or the close code)."""
    ws = communicator(path, headers)
    connected, code = await ws.connect()
    first = (await ws.receive_json_from(timeout=5))["type"] if connected else code
    await ws.disconnect()
    return connected, first


def connect(path: str, headers: list[tuple[bytes, bytes]] = ORIGIN) -> tuple[bool, Any]:
    return async_to_sync(handshake)(path, headers)


def test_a_ticket_opens_the_owners_job_and_their_job_list():
    user = UserFactory.create()
    job = JobFactory.create(user=user)
    issued = ticket_for(user)
    assert issued["expires_in"] == 30 and issued["expires_at"]
    assert connect(f"/ws/jobs/{job.id}/?ticket={issued['ticket']}&after=0") == (True, "snapshot")
    assert connect(f"/ws/jobs/?ticket={ticket_for(user)['ticket']}") == (True, "snapshot")


def test_a_ticket_opens_one_connection_only():
    user = UserFactory.create()
    job = JobFactory.create(user=user)
    path = f"/ws/jobs/{job.id}/?ticket={ticket_for(user)['ticket']}"
    assert connect(path) == (True, "snapshot")
    assert connect(path) == (False, CLOSE_UNAUTHENTICATED)


def test_two_handshakes_racing_with_one_ticket_make_one_connection():
    user = UserFactory.create()
    job = JobFactory.create(user=user)
    path = f"/ws/jobs/{job.id}/?ticket={ticket_for(user)['ticket']}"

    async def race() -> list[tuple[bool, Any]]:
        return list(await asyncio.gather(*(handshake(path) for _ in range(4))))

    outcomes = async_to_sync(race)()
    assert sorted(outcomes, key=str) == sorted([(True, "snapshot")] + [(False, CLOSE_UNAUTHENTICATED)] * 3, key=str)


def test_an_expired_ticket_is_refused(settings):
    settings.WS_TICKET_SECONDS = 1
    user = UserFactory.create()
    job = JobFactory.create(user=user)
    issued = ticket_for(user)
    assert issued["expires_in"] == 1
    time.sleep(1.2)
    assert connect(f"/ws/jobs/{job.id}/?ticket={issued['ticket']}") == (False, CLOSE_UNAUTHENTICATED)


def test_a_ticket_is_bound_to_its_user():
    user = UserFactory.create()
    job = JobFactory.create(user=user)
    stranger = UserFactory.create()
    # Another user's job is closed as if it did not exist, before the handshake is accepted (a
    # browser sees HTTP 403), exactly as with that user's API key.
    assert connect(f"/ws/jobs/{job.id}/?ticket={ticket_for(stranger)['ticket']}") == (False, CLOSE_NOT_FOUND)
    assert connect(f"/ws/jobs/{job.id}/", with_key(api_key_for(stranger))) == (False, CLOSE_NOT_FOUND)


def test_no_credentials_no_ticket_and_no_connection():
    user = UserFactory.create()
    job = JobFactory.create(user=user)
    anonymous = APIClient().post("/api/ws-tickets/")
    assert anonymous.status_code == 401 and "detail" in anonymous.json()
    assert connect(f"/ws/jobs/{job.id}/") == (False, CLOSE_UNAUTHENTICATED)
    assert connect(f"/ws/jobs/{job.id}/?ticket=made-up") == (False, CLOSE_UNAUTHENTICATED)
    assert connect(f"/ws/jobs/{job.id}/?ticket=") == (False, CLOSE_UNAUTHENTICATED)


def test_a_deactivated_users_ticket_is_refused():
    user = UserFactory.create()
    job = JobFactory.create(user=user)
    issued = ticket_for(user)
    user.is_active = False
    user.save()
    assert connect(f"/ws/jobs/{job.id}/?ticket={issued['ticket']}") == (False, CLOSE_UNAUTHENTICATED)


def test_a_signed_in_browser_gets_a_ticket_with_its_session_and_csrf_token():
    user = UserFactory.create()
    job = JobFactory.create(user=user)
    browser = APIClient(enforce_csrf_checks=True)
    browser.force_login(user)
    assert browser.post("/api/ws-tickets/").status_code == 403, "a session POST needs its CSRF token"
    browser.get("/admin/login/")  # sets the csrftoken cookie, as any page of the site does
    token = browser.cookies["csrftoken"].value
    response = browser.post("/api/ws-tickets/", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 201
    assert connect(f"/ws/jobs/{job.id}/?ticket={response.json()['ticket']}") == (True, "snapshot")


def test_a_refused_ticket_does_not_fall_back_to_the_session_cookie(client):
    """A credential that is given and refused decides: the handshake fails rather than quietly
    running as whoever the cookie names."""
    user = UserFactory.create()
    job = JobFactory.create(user=user)
    client.force_login(user)
    cookie = (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())
    assert connect(f"/ws/jobs/{job.id}/", [*ORIGIN, cookie]) == (True, "snapshot")
    assert connect(f"/ws/jobs/{job.id}/?ticket=spent", [*ORIGIN, cookie]) == (False, CLOSE_UNAUTHENTICATED)


def test_the_cache_holds_no_usable_ticket():
    user = UserFactory.create()
    issued = ws_ticket_issue(user=user)
    # Whoever reads the cache (Redis) finds digests, never a ticket that would open a websocket.
    keys = list(cache._cache.keys())  # type: ignore[attr-defined]  # LocMemCache in the unit tier
    assert keys and not any(issued.ticket in key for key in keys)


def test_an_api_key_in_the_url_is_refused_unless_allowed(settings):
    user = UserFactory.create()
    job = JobFactory.create(user=user)
    path = f"/ws/jobs/{job.id}/?token={api_key_for(user)}"
    assert connect(path) == (False, CLOSE_UNAUTHENTICATED)
    assert connect(f"/ws/jobs/{job.id}/", with_key(api_key_for(user))) == (True, "snapshot")
    settings.WS_ALLOW_TOKEN_IN_URL = True
    assert connect(path) == (True, "snapshot")
