"""A web process that starts reads, in the background, the history of the kinds of workflow
submitted lately: its first submit of each does not read it cold."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from anime_production.asgi import application
from jobs import eta
from jobs.refresh_ahead import refreshes_wait
from tests.unit.test_eta import finished_job, image_workflow


@pytest.fixture(autouse=True)
def _fresh_caches():
    eta.eta_cache_clear()
    yield
    refreshes_wait()
    eta.eta_cache_clear()


def start_and_stop_the_process() -> list[dict[str, Any]]:
    """The lifespan messages a server sends a process that starts, then stops; what it answers."""

    async def run() -> list[dict[str, Any]]:
        incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        answers: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return incoming.pop(0)

        async def send(message: dict[str, Any]) -> None:
            answers.append(message)

        await asyncio.wait_for(application({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send), 5)
        return answers

    return asyncio.run(run())


@pytest.mark.django_db(transaction=True)  # the read ahead runs on the refresher's own connection
def test_a_starting_web_process_reads_ahead_the_history_of_recent_kinds_of_workflow():
    workflow = image_workflow()
    for _ in range(3):
        finished_job(workflow, "gpu-a", {"3": 12.0, "8": 2.0})

    answers = start_and_stop_the_process()
    assert answers == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    refreshes_wait()

    # The first submit of that kind: its expected run is known, with no query on the caller's thread.
    with CaptureQueriesContext(connection) as queries:
        expected = eta.expected_total_seconds("gpu-a", workflow)
    assert len(queries) == 0
    assert expected is not None and expected >= 14.0


@pytest.mark.django_db(transaction=True)
def test_a_web_process_starts_when_the_read_ahead_fails(monkeypatch, caplog):
    def database_down(*_: Any) -> None:
        raise eta.DatabaseError("connection refused")

    monkeypatch.setattr(eta, "_histories_read", database_down)
    finished_job(image_workflow(), "gpu-a", {"8": 2.0})

    assert start_and_stop_the_process()[0] == {"type": "lifespan.startup.complete"}
    refreshes_wait()
    assert "refreshing ('eta history', 'warm-up') failed" in caplog.text  # logged; served as before


def test_a_web_process_starts_when_the_broker_is_down(monkeypatch, caplog):
    # The lifespan connects the broker's producer in the background (the first wake's publish paid
    # that, 36-51 ms): a broker that is down only logs, and the first wake connects as before.
    from celery import current_app

    def broker_down(*_: Any, **__: Any) -> None:
        raise ConnectionRefusedError("connection refused")

    monkeypatch.setattr(current_app._get_current_object(), "producer_or_acquire", broker_down)
    assert start_and_stop_the_process()[0] == {"type": "lifespan.startup.complete"}
    refreshes_wait()
    assert "the broker could not be reached at start" in caplog.text
