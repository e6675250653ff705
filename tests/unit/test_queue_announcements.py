"""A queue move: one message for the fleet's whole queue (waiting jobs are bound to no backend), a
constant number of queries whatever its length, and every waiting job's subscribers told their new
place and ETA from it. The default worker announces it (jobs.tasks.queue_announce), once for a burst
of moves and at most once per QUEUE_ANNOUNCE_INTERVAL; the mover pays a cache write."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from unittest import mock

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from fleet.catalog import backend_facts_forget
from jobs import selectors, services
from jobs.models import Job, JobStatus
from jobs.queue_announcements import FLEET_QUEUE_GROUP, job_key, own_seconds, place_of, state_placed
from tests.factories import SLEEP_WORKFLOW, JobFactory, UserFactory
from tests.unit.test_websocket import communicator, token_for, with_key

pytestmark = pytest.mark.django_db(transaction=True)


def waiting(count: int, user=None, **fields) -> list[Job]:
    user = user or UserFactory.create()
    start = timezone.now() - timedelta(hours=1)
    return Job.objects.bulk_create(
        [
            Job(
                user=user,
                workflow=SLEEP_WORKFLOW,
                job_type="image",
                priority=(index % 3) * 4,
                created_at=start + timedelta(milliseconds=index),
                **fields,
            )
            for index in range(count)
        ]
    )


def announce() -> tuple[int, list[tuple[str, dict]]]:
    """One announcement, as the default worker's task makes it: its queries and its sends."""
    layer = get_channel_layer()
    sent: list[tuple[str, dict]] = []
    original = layer.group_send

    async def recording(group, message):
        sent.append((group, message))
        await original(group, message)

    backend_facts_forget()  # each move reads the backends (kept a second otherwise): counts compare
    with mock.patch.object(layer, "group_send", recording), CaptureQueriesContext(connection) as queries:
        services.queue_announce()
    return len(queries), sent


def announcement_tasks(calls: Any) -> list[float]:
    """The countdowns of the queue_announce tasks sent (Signature.apply_async's calls)."""
    return [call.kwargs.get("countdown", 0.0) for call in calls.call_args_list]


def test_a_burst_of_moves_asks_the_default_worker_for_one_announcement_and_the_next_waits_its_interval(settings):
    settings.QUEUE_ANNOUNCE_INTERVAL = 0.5
    waiting(3)
    with mock.patch("celery.canvas.Signature.apply_async") as sent, CaptureQueriesContext(connection) as queries:
        for _ in range(100):
            services.queue_moved()
    assert announcement_tasks(sent) == [0.0], "one announcement, at once: nothing was announced lately"
    assert len(queries) == 0, "the mover reads nothing of the queue"
    with mock.patch("celery.canvas.Signature.apply_async") as sent:
        announce()  # the task runs
        services.queue_moved()
        services.queue_moved()
    [countdown] = announcement_tasks(sent)
    assert 0.3 < countdown <= 0.5, "the next one waits out the interval after the last"


def test_a_move_while_the_broker_is_down_is_announced_by_the_next_move():
    waiting(1)
    with mock.patch("celery.canvas.Signature.apply_async", side_effect=ConnectionError("broker down")):
        services.queue_moved()  # logged, never raised: the move itself stands
    with mock.patch("celery.canvas.Signature.apply_async") as sent:
        services.queue_moved()
    assert announcement_tasks(sent) == [0.0]


def test_a_queue_move_costs_the_same_queries_and_one_send_at_any_length():
    waiting(10)
    announce()  # the first also learns the ETA from history, which the next minute's reuse
    short_queries, short_sent = announce()
    waiting(990)
    long_queries, long_sent = announce()
    # 4 reads; on PostgreSQL also sorting off and back on around the reads of the order (jobs.queue_order).
    assert long_queries == short_queries <= (4 if connection.vendor != "postgresql" else 7)
    assert [group for group, _ in short_sent] == [group for group, _ in long_sent] == [FLEET_QUEUE_GROUP]


def test_every_waiting_job_can_read_its_true_place_from_the_announcement():
    jobs = waiting(300)  # past the old limit of 200 jobs told
    _, sent = announce()
    message = sent[0][1]
    truth = selectors.queue_places(list(Job.objects.filter(status=JobStatus.QUEUED)))
    for job in jobs:
        place = place_of(message, job_key(job.pk))
        assert place is not None and place.position == truth[job.pk].position
    started = JobFactory.create(status=JobStatus.RUNNING)
    assert place_of(message, job_key(started.pk)) is None, "a job that is not waiting has no place"


def test_a_subscriber_hears_its_job_move_up_when_the_job_ahead_starts():
    user = UserFactory.create()
    ahead = JobFactory.create(user=user, priority=9)
    mine = JobFactory.create(user=user, priority=5)
    token = token_for(user)

    async def scenario():
        ws = communicator(f"/ws/jobs/{mine.id}/", with_key(token))
        await ws.connect()
        snapshot = await ws.receive_json_from(timeout=5)
        with mock.patch("celery.canvas.Signature.apply_async") as sent:
            await database_sync_to_async(services.job_transition)(ahead, JobStatus.SUBMITTED)
        assert len(sent.call_args_list) == 1, "the move asked the default worker for an announcement"
        await database_sync_to_async(services.queue_announce)()  # the default worker's task
        update = await ws.receive_json_from(timeout=5)
        await ws.disconnect()
        return snapshot, update

    snapshot, update = async_to_sync(scenario)()
    assert snapshot["job"]["queue_position"] == 2
    assert update["job"]["queue_position"] == 1 and update["job"]["status"] == "queued"
    assert update["job"]["version"] > snapshot["job"]["version"], "clients keep only newer states"


def test_the_announced_eta_is_the_wait_ahead_plus_the_jobs_own_run():
    (job,) = waiting(1)
    message = {**_keys(job), "waits": [30.0], "at": timezone.now().timestamp()}
    state = {"queue_position": None, "eta": None, "version": 7}
    with mock.patch("jobs.queue_announcements.eta.expected_total_seconds", return_value=12.0):
        own = own_seconds(job)
    placed = state_placed(state, message, job_key(job.pk), own)
    assert placed is not None and placed["queue_position"] == 1 and placed["version"] == 8
    finish_at = datetime.fromisoformat(placed["eta"]["finish_at"])
    assert abs((finish_at - timezone.now()).total_seconds() - 42.0) < 2.0
    assert placed["eta"]["estimate"] is True
    assert state_placed(placed, message, job_key(job.pk), own) is None, "nothing new: nothing sent"


def _keys(job: Job) -> dict[str, bytes]:
    from array import array

    return {"keys": array("q", [job_key(job.pk)]).tobytes(), "places": array("i", [1]).tobytes()}
