"""A manual retry is made once, and can be followed live like any job."""

from __future__ import annotations

import json
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.db import IntegrityError, transaction
from rest_framework.test import APIClient

from jobs import broadcast, selectors, services
from jobs.models import FailureCategory, Job, JobStatus
from tests.factories import JobFactory, api_key_for
from tests.unit.test_websocket import communicator, with_key


def failed_job(user: Any) -> Job:
    return JobFactory.create(user=user, status=JobStatus.FAILED, failure_category=FailureCategory.NODE_ERROR)


@pytest.mark.django_db
def test_a_second_retry_answers_with_the_same_job(api: APIClient, user: Any, django_capture_on_commit_callbacks):
    job = failed_job(user)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        first = api.post(f"/api/jobs/{job.id}/retry/")
        second = api.post(f"/api/jobs/{job.id}/retry/")
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert Job.objects.filter(retry_of=job).count() == 1
    assert len([c for c in callbacks if "_send_on_commit" in c.__qualname__]) == 1, "the retry wakes a backend once"


@pytest.mark.django_db
def test_a_retry_that_loses_the_race_gets_the_winners_job(user: Any, monkeypatch, django_capture_on_commit_callbacks):
    """Both requests read "no retry yet" before either inserts: the database keeps one, and the
    loser answers with it, without enqueueing a second run."""
    job = failed_job(user)
    winner, created = services.job_retry_get_or_create(job)
    assert created
    monkeypatch.setattr(selectors, "job_manual_retry", lambda job: None)  # the loser's stale read
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        loser, created = services.job_retry_get_or_create(job)
    assert (loser.pk, created) == (winner.pk, False)
    assert Job.objects.filter(retry_of=job).count() == 1
    assert not [c for c in callbacks if "_send_on_commit" in c.__qualname__]


@pytest.mark.django_db
def test_the_database_refuses_a_second_retry_row(user: Any) -> None:
    job = failed_job(user)
    JobFactory.create(user=user, retry_of=job)
    with pytest.raises(IntegrityError), transaction.atomic():
        JobFactory.create(user=user, retry_of=job)


@pytest.mark.django_db
def test_a_retried_jobs_state_is_plain_json_and_msgpack(api: APIClient, user: Any) -> None:
    """The Redis channel layer packs messages with msgpack, websockets send json: neither knows UUID."""
    job = failed_job(user)
    retry = Job.objects.get(pk=api.post(f"/api/jobs/{job.id}/retry/").json()["id"])
    state = selectors.job_state(retry)
    assert state["retry_of"] == str(job.id)
    message = {"type": "job.state", "job": state, "events": []}
    assert json.loads(json.dumps(message)) == message
    assert msgpack.unpackb(msgpack.packb(message)) == message


@pytest.mark.django_db(transaction=True)
def test_a_retried_job_can_be_followed_and_its_broadcasts_arrive(user: Any, monkeypatch) -> None:
    job = failed_job(user)
    retry = services.job_retry(job)
    failures: list[str] = []
    monkeypatch.setattr(broadcast.logger, "warning", lambda *args, **kwargs: failures.append(args[0] % args[1:]))
    token = api_key_for(user)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        ws = communicator(f"/ws/jobs/{retry.id}/", with_key(token))
        connected, _ = await ws.connect()
        assert connected
        snapshot = await ws.receive_json_from(timeout=5)
        await database_sync_to_async(services.job_transition)(retry, JobStatus.SUBMITTED)
        update = await ws.receive_json_from(timeout=5)
        await ws.disconnect()
        return snapshot, update

    snapshot, update = async_to_sync(scenario)()
    assert snapshot["job"]["retry_of"] == str(job.id)
    assert update["job"]["status"] == "submitted" and update["job"]["retry_of"] == str(job.id)
    assert failures == []
