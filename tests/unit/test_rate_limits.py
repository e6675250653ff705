"""One user's flood slows only that user: submits have their own rate, websocket connects are
counted per user per minute (the cache is in memory here, Redis in production)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from rest_framework.test import APIClient

from jobs import consumers
from jobs.consumers import CLOSE_TOO_MANY_CONNECTS
from jobs.models import FailureCategory, Job, JobStatus
from tests.factories import SLEEP_WORKFLOW, JobFactory, UserFactory, api_key_for
from tests.unit.test_websocket import communicator, with_key


@pytest.fixture
def rates(throttle_rates) -> dict[str, str]:
    return throttle_rates(anon="100/min", user="100/min", submit="2/min")


def submit(api: APIClient) -> Any:
    return api.post("/api/jobs/", {"workflow": SLEEP_WORKFLOW, "job_type": "image"}, format="json")


@pytest.mark.django_db
def test_submits_past_the_submit_rate_are_a_429_with_retry_after(api: APIClient, user: Any, rates) -> None:
    assert [submit(api).status_code for _ in range(2)] == [201, 201]
    refused = submit(api)
    assert refused.status_code == 429
    assert 0 < int(refused["Retry-After"]) <= 60
    assert Job.objects.count() == 2
    # Reading is not submitting, and another user's submits are their own.
    assert api.get("/api/jobs/").status_code == 200
    other = APIClient()
    other.force_authenticate(UserFactory.create())
    assert submit(other).status_code == 201


@pytest.mark.django_db
def test_a_retry_is_a_submit_too(api: APIClient, user: Any, rates) -> None:
    failed = [
        JobFactory.create(user=user, status=JobStatus.FAILED, failure_category=FailureCategory.LOST) for _ in range(3)
    ]
    codes = [api.post(f"/api/jobs/{job.id}/retry/").status_code for job in failed]
    assert codes == [201, 201, 429]


@pytest.mark.django_db(transaction=True)
def test_websocket_connects_past_the_minutes_limit_close_with_4429(settings, monkeypatch) -> None:
    settings.WS_CONNECTS_PER_MINUTE = 3
    # One minute for the whole test: the count must not start again at a minute's boundary.
    monkeypatch.setattr(consumers, "time", SimpleNamespace(time=lambda: 1_800_000_000.0, monotonic=time.monotonic))
    flooder, neighbour = UserFactory.create(), UserFactory.create()
    flood = (f"/ws/jobs/{JobFactory.create(user=flooder).id}/", api_key_for(flooder))
    calm = ("/ws/jobs/", api_key_for(neighbour))

    async def connect(path: str, key: str) -> tuple[str, Any]:
        ws = communicator(path, with_key(key))
        await ws.connect()
        message = await ws.receive_output(timeout=5)
        await ws.disconnect()
        return message["type"], message.get("code")

    async def scenario() -> list[tuple[str, Any]]:
        return [await connect(*flood) for _ in range(4)] + [await connect(*calm)]

    outcomes = async_to_sync(scenario)()
    assert outcomes[:3] == [("websocket.send", None)] * 3, "the first three get their snapshot"
    assert outcomes[3] == ("websocket.close", CLOSE_TOO_MANY_CONNECTS)
    assert outcomes[4] == ("websocket.send", None), "another user is not limited by the flood"
