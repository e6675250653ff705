"""Numbers in query strings are a 400 with the reason (a close code on websockets), never a 500.

`"²".isdigit()` is True but `int("²")` raises; 5,000 digits pass `isdigit()` and then exceed
Python's integer-string limit. Page sizes are capped, and a forged cursor is refused too.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from rest_framework.test import APIClient

from anime_production.asgi import application
from jobs import services
from jobs.consumers import CLOSE_BAD_REQUEST
from jobs.models import EventKind, Job
from tests.factories import JobFactory, UserFactory, api_key_for
from tests.unit.test_websocket import ORIGIN

BAD_NUMBERS = ["²", "9" * 5000, "-1", "1.5", "x", str(2**63), "1e3"]  # "after=" is no after at all


@pytest.mark.django_db
@pytest.mark.parametrize("after", BAD_NUMBERS)
def test_events_after_a_bad_number_is_a_400_naming_the_parameter(api: APIClient, user: Any, after: str) -> None:
    job = JobFactory.create(user=user)
    response = api.get(f"/api/jobs/{job.id}/events/", {"after": after})
    assert response.status_code == 400, response.content
    assert list(response.json()) == ["after"] and response.json()["after"]


@pytest.mark.django_db
def test_events_after_a_number_gives_what_follows(api: APIClient, user: Any) -> None:
    job = JobFactory.create(user=user)
    for n in range(3):
        services.job_event(job, EventKind.NOTE, data={"message": str(n)})
    for after, expected in (("1", [2, 3]), ("١", [2, 3]), ("0", [1, 2, 3]), ("3", [])):
        events = api.get(f"/api/jobs/{job.id}/events/", {"after": after}).json()["events"]
        assert [e["seq"] for e in events] == expected, after


@pytest.mark.django_db
@pytest.mark.parametrize("page_size", ["²", "9" * 5000, "0", "-3", "abc"])
def test_a_bad_page_size_is_a_400(api: APIClient, user: Any, page_size: str) -> None:
    JobFactory.create(user=user)
    response = api.get("/api/jobs/", {"page_size": page_size})
    assert response.status_code == 400 and "page_size" in response.json()


@pytest.mark.django_db
def test_page_size_is_capped(api: APIClient, user: Any) -> None:
    Job.objects.bulk_create(
        [Job(user=user, backend="default", job_type="image", workflow={}, prompt_id=None) for _ in range(205)]
    )
    assert len(api.get("/api/jobs/", {"page_size": "100000"}).json()["results"]) == 200
    assert len(api.get("/api/jobs/", {"page_size": "7"}).json()["results"]) == 7


@pytest.mark.django_db
@pytest.mark.parametrize("position", ["garbage", "9" * 5000, "2024-13-45 99:99:99"])
def test_a_forged_cursor_is_a_400(api: APIClient, user: Any, position: str) -> None:
    JobFactory.create(user=user)
    cursor = base64.b64encode(f"p={position}".encode()).decode()
    response = api.get("/api/jobs/", {"cursor": cursor})
    assert response.status_code == 400 and "cursor" in response.json()
    assert api.get("/api/jobs/", {"cursor": "not base64 at all"}).status_code == 400


# --- the websocket handshake --------------------------------------------------------------------


def close_of(path: str, *, query_string: bytes | None = None, headers: list[tuple[bytes, bytes]] = ORIGIN) -> Any:
    async def scenario() -> Any:
        ws = WebsocketCommunicator(application, path, headers=headers)
        if query_string is not None:
            ws.scope["query_string"] = query_string
        connected, _ = await ws.connect()
        message = await ws.receive_output(timeout=5)
        await ws.wait()
        return connected, message

    return async_to_sync(scenario)()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("after", ["²", "9" * 5000, "-1"])
def test_websocket_after_a_bad_number_closes_with_4400_and_the_reason(after: str) -> None:
    user = UserFactory.create()
    job = JobFactory.create(user=user)
    headers = [*ORIGIN, (b"x-api-key", api_key_for(user).encode())]
    connected, message = close_of(f"/ws/jobs/{job.id}/?after={after}", headers=headers)
    assert connected, "accepted first, so that the browser sees the code"
    assert message["type"] == "websocket.close" and message["code"] == CLOSE_BAD_REQUEST
    assert message["reason"].startswith("after: ") and len(message["reason"].encode()) <= 123


@pytest.mark.django_db(transaction=True)
def test_websocket_query_that_is_not_utf8_or_too_long_is_refused_cleanly() -> None:
    user = UserFactory.create()
    job = JobFactory.create(user=user)
    headers = [*ORIGIN, (b"x-api-key", api_key_for(user).encode())]
    for query in (b"after=\xff\xfe", b"&".join(b"f%d=1" % n for n in range(50))):
        connected, message = close_of(f"/ws/jobs/{job.id}/", query_string=query, headers=headers)
        assert connected and (message["type"], message["code"]) == ("websocket.close", CLOSE_BAD_REQUEST), query
