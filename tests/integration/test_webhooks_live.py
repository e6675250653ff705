"""Webhooks on real parts: a job through the GPU worker and the simulator, its events sent by the
webhooks worker (a real `celery worker -Q webhooks`) to a receiver this test runs on 127.0.0.1
(allowed through WEBHOOK_ALLOWED_HOSTS), signed so that the Standard Webhooks library verifies them."""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterator

import pytest
from standardwebhooks.webhooks import Webhook as ReferenceVerifier

from devtools.processes import free_port
from fleet.workers import WEBHOOK_QUEUE
from tests.conftest import wait_for
from tests.integration.test_job_lifecycle import sleep_workflow, submit, wait_final
from tests.system import CeleryWorker, database_url_for_subprocess
from tests.webhook_receiver import Received, WebhookReceiver
from webhooks.models import WebhookDelivery

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# The webhooks worker retries quickly here (after 0.5 s, 1 s, then every 1 s, for 30 s) and waits
# 4 s for an answer.
WORKER_SETTINGS = {
    "WEBHOOK_RETRY_BASE_SECONDS": "0.5",
    "WEBHOOK_RETRY_MAX_DELAY_SECONDS": "1",
    "WEBHOOK_RETRY_FOR_SECONDS": "30",
    "WEBHOOK_READ_TIMEOUT": "4",
}


@pytest.fixture(scope="module")
def webhooks_worker(
    redis_of_this_run, django_db_setup, django_db_blocker, gpu_worker, tmp_path_factory
) -> Iterator[CeleryWorker]:
    with django_db_blocker.unblock():
        database_url = database_url_for_subprocess()
    env = dict(
        os.environ,
        DATABASE_URL=database_url,
        WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
        PYTHONUNBUFFERED="1",
        **WORKER_SETTINGS,
    )
    worker = CeleryWorker(
        queue=WEBHOOK_QUEUE,
        env=env,
        log_path=tmp_path_factory.mktemp("logs") / "webhooks-worker.log",
        concurrency=2,
    )
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def hooked(live, webhooks_worker, settings):
    """A job can run, and its webhooks are sent; this process may name the local receiver too."""
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    return live


def verified(request: Received, secret: str) -> dict:
    return ReferenceVerifier(secret).verify(request.body, request.headers)


def subscribe(api, url: str, events: list[str]) -> dict:
    created = api.post("/api/webhooks/", {"url": url, "events": events}, format="json")
    assert created.status_code == 201, created.content
    return created.json()


def test_a_real_job_sends_started_and_completed_signed(hooked, api):
    with WebhookReceiver() as receiver:
        job = submit(api, sleep_workflow(0.5, prefix="hooked"), webhook={"url": receiver.url})
        secret = job["webhook"]["secret"]
        done = wait_final(api, job["id"])
        requests = receiver.wait_for(2)
    assert done["status"] == "completed"
    payloads = {payload["type"]: payload for payload in (verified(request, secret) for request in requests)}
    assert set(payloads) == {"job.started", "job.completed"}
    completed = payloads["job.completed"]["data"]
    assert completed["id"] == job["id"] and completed["status"] == "completed"
    assert completed["progress_percent"] == 100.0 and completed["outputs"][0]["media_type"] == "image/png"
    assert completed["url"].endswith(f"/api/jobs/{job['id']}/")
    assert payloads["job.started"]["data"]["status"] == "running"

    def both_recorded() -> list[dict]:
        body = api.get(f"/api/jobs/{job['id']}/webhook-deliveries/").json()
        return body if len(body) == 2 else []

    deliveries = wait_for(both_recorded, message="two recorded deliveries")
    assert {(d["event"], d["status_code"], d["outcome"]) for d in deliveries} == {
        ("job.started", 204, "delivered"),
        ("job.completed", 204, "delivered"),
    }


def test_a_receiver_that_answers_500_is_retried_until_it_takes_the_message(hooked, api):
    with WebhookReceiver(statuses=[500, 500]) as receiver:
        webhook = subscribe(api, receiver.url, ["job.completed"])
        job = submit(api, sleep_workflow(0.2, prefix="retried"))
        assert wait_final(api, job["id"])["status"] == "completed"
        requests = receiver.wait_for(3, timeout=30)
    assert len({request.headers["webhook-id"] for request in requests}) == 1, "one message, three attempts"
    assert all(verified(request, webhook["secret"])["data"]["id"] == job["id"] for request in requests)
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(requests)]
    assert gaps[0] >= 0.4 and gaps[1] >= 0.9, f"backoff of 0.5 s then 1 s, got {gaps}"

    def all_recorded() -> list[dict]:
        page = api.get(f"/api/webhooks/{webhook['id']}/deliveries/").json()["results"]
        return page if len(page) == 3 else []

    deliveries = wait_for(all_recorded, message="three recorded attempts")
    assert [(d["attempt"], d["status_code"], d["outcome"]) for d in reversed(deliveries)] == [
        (1, 500, "retrying"),
        (2, 500, "retrying"),
        (3, 204, "delivered"),
    ]


def test_a_failing_job_sends_job_failed_with_its_category(hooked, api):
    workflow = sleep_workflow(0.1)
    workflow["2"] = {"class_type": "TestSyncError", "inputs": {"value": ["1", 0], "error_message": "boom"}}
    with WebhookReceiver() as receiver:
        webhook = subscribe(api, receiver.url, ["job.failed"])
        job = submit(api, workflow)
        assert wait_final(api, job["id"])["status"] == "failed"
        (request,) = receiver.wait_for(1)
    payload = verified(request, webhook["secret"])
    assert payload["type"] == "job.failed"
    assert payload["data"]["failure_category"] == "node_error"
    assert payload["data"]["error"]["category"] == "node_error"
    assert "TestSyncError" in payload["data"]["error"]["message"]
    assert json.loads(request.body)["data"]["id"] == job["id"]


# Last in this module: its hanging receiver holds the webhooks worker's slots for a while.
def test_a_receiver_that_is_down_or_hangs_does_not_delay_the_job(hooked, api):
    down_url = f"http://127.0.0.1:{free_port()}/hook"
    # Were the events sent from the tracker, the job would wait 4 s (the read timeout) on each.
    with WebhookReceiver(delay=8.0) as hanging:
        subscribe(api, down_url, ["job.started", "job.completed"])
        subscribe(api, hanging.url, ["job.started", "job.completed"])
        started = time.monotonic()
        job = submit(api, sleep_workflow(0.5, prefix="undelayed"))
        done = wait_final(api, job["id"], timeout=30)
        took = time.monotonic() - started
        assert done["status"] == "completed"
        assert done["run_seconds"] < 3.5, f"the job ran {done['run_seconds']} s ({took:.1f} s from submission)"
        refused = wait_for(
            lambda: list(WebhookDelivery.objects.filter(job_id=job["id"], webhook__url=down_url)),
            message="an attempt at the receiver that is down",
        )
        assert refused[0].status_code is None and "refused" in refused[0].error.lower()
        assert refused[0].next_retry_at is not None
        assert hanging.requests(), "the hanging receiver was called while the job ran on"
