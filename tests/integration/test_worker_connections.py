"""A GPU worker keeps its database connection from task to task, as Django keeps one from request to
request (CONN_MAX_AGE, health-checked before reuse): Celery's Django fixup closed every connection at
every task, so each wake connected to PostgreSQL anew on a free GPU's path (anime_production/celery.py)."""

from __future__ import annotations

import time

import pytest
from django.db import connection

from tests.integration.test_job_lifecycle import sleep_workflow, submit, wait_final

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

STATISTICS_FLUSH_SECONDS = 1.5  # PostgreSQL publishes a backend's counters at most once a second


def sessions_opened() -> int:
    """Connections ever made to this database (PostgreSQL's cumulative statistics)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        return int(cursor.fetchone()[0])


def test_a_gpu_worker_runs_job_after_job_on_the_connection_it_has(live, api):
    if connection.vendor != "postgresql":
        pytest.skip("counted in PostgreSQL's statistics")
    assert wait_final(api, submit(api, sleep_workflow(0.1))["id"])["status"] == "completed"  # connected once
    time.sleep(STATISTICS_FLUSH_SECONDS)
    before = sessions_opened()
    for _ in range(4):  # each one a wake task: the worker was idle when it was made
        assert wait_final(api, submit(api, sleep_workflow(0.1))["id"])["status"] == "completed"
    time.sleep(STATISTICS_FLUSH_SECONDS)
    assert sessions_opened() - before <= 1
