"""A manual retry on real parts: made once however many requests race for it, and followed live over
the Redis channel layer (which packs every message with msgpack) until it finishes."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from asgiref.sync import async_to_sync
from rest_framework.test import APIClient

from jobs.models import FailureCategory, Job, JobStatus
from tests.factories import JobFactory, api_key_for
from tests.integration.test_job_lifecycle import sleep_workflow
from tests.unit.test_websocket import communicator, with_key

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

RACERS = 8


def failed_job(user: Any) -> Job:
    return JobFactory.create(
        user=user, workflow=sleep_workflow(0.3), status=JobStatus.FAILED, failure_category=FailureCategory.LOST
    )


def test_racing_retries_through_daphne_make_one_job(live: Any, web_server: str, user: Any) -> None:
    job = failed_job(user)
    key = api_key_for(user)
    start = threading.Barrier(RACERS)

    def retry(_: int) -> tuple[int, str]:
        http = requests.Session()
        http.trust_env = False
        start.wait(timeout=30)
        response = http.post(f"{web_server}/api/jobs/{job.id}/retry/", headers={"X-API-Key": key}, timeout=60)
        return response.status_code, response.json().get("id", response.text)

    with ThreadPoolExecutor(RACERS) as pool:
        answers = list(pool.map(retry, range(RACERS)))
    assert sorted(code for code, _ in answers) == [200] * (RACERS - 1) + [201], answers
    assert len({job_id for _, job_id in answers}) == 1
    assert Job.objects.filter(retry_of=job).count() == 1


def test_a_retried_job_is_followed_over_the_redis_layer_to_the_end(live: Any, api: APIClient, user: Any) -> None:
    job = failed_job(user)
    token = api_key_for(user)

    async def follow(job_id: str) -> list[dict[str, Any]]:
        ws = communicator(f"/ws/jobs/{job_id}/", with_key(token))
        connected, _ = await ws.connect()
        assert connected
        states = [(await ws.receive_json_from(timeout=10))["job"]]
        while states[-1]["status"] not in ("completed", "failed", "cancelled"):
            message = await ws.receive_json_from(timeout=30)
            if message["job"]:
                states.append(message["job"])
        await ws.disconnect()
        return states

    retry = api.post(f"/api/jobs/{job.id}/retry/").json()
    states = async_to_sync(follow)(retry["id"])
    assert states[-1]["status"] == "completed", states[-1]
    assert len(states) > 1, "no update reached the subscriber"
    assert {state["retry_of"] for state in states} == {str(job.id)}
