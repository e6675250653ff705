"""A GPU worker keeps its database connection from task to task, as Django keeps one from request to
request (CONN_MAX_AGE, health-checked before reuse): Celery's Django fixup closed every connection at
every task, so each wake connected to PostgreSQL anew on a free GPU's path (anime_production/celery.py)."""

from __future__ import annotations

import time

import pytest
from django.db import connection

from jobs.refresh_ahead import refresh_in_background, refreshes_wait
from tests.integration.test_job_lifecycle import sleep_workflow, submit, wait_final

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

STATISTICS_FLUSH_SECONDS = 1.5  # PostgreSQL publishes a backend's counters at most once a second
# Sessions the GPU worker may rightly open in the test's few seconds, whatever it ran before: its
# task connection, when DATABASE_CONN_MAX_AGE sets an age, is closed at the next task past it; its
# refresher (jobs.refresh_ahead: a thread with a connection of its own, closed after 30 s idle) may
# start again when one of its ETA histories turns a minute old. A connection made at every task
# would be at least one a job, 4 here.
WORKER_SESSIONS_ALLOWED = 2


def sessions_opened() -> int:
    """Connections ever made to this database (PostgreSQL's cumulative statistics)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        return int(cursor.fetchone()[0])


def connect_this_thread() -> None:
    connection.ensure_connection()  # `connection` is the calling thread's: here, the refresher's


def test_a_gpu_worker_runs_job_after_job_on_the_connection_it_has(live, api):
    if connection.vendor != "postgresql":
        pytest.skip("counted in PostgreSQL's statistics")
    assert wait_final(api, submit(api, sleep_workflow(0.1))["id"])["status"] == "completed"  # connected once
    # This process's submits refresh history too: its refresher connects now, and stays connected
    # (30 s idle) through the jobs below, so what is counted from here on is the GPU worker's.
    refresh_in_background(("test", "connected"), connect_this_thread)
    refreshes_wait()
    time.sleep(STATISTICS_FLUSH_SECONDS)
    before = sessions_opened()
    for _ in range(4):  # each one a wake task: the worker was idle when it was made
        assert wait_final(api, submit(api, sleep_workflow(0.1))["id"])["status"] == "completed"
    time.sleep(STATISTICS_FLUSH_SECONDS)
    assert sessions_opened() - before <= WORKER_SESSIONS_ALLOWED


def test_a_gpu_worker_s_pool_process_reads_ahead_for_its_backend_as_it_starts(live):
    """Celery's signals wired (anime_production/celery.py): the worker of queue gpu.default reads
    ahead for backend default (what it reads: tests/unit/test_refresh_ahead.py)."""
    assert "reading ahead for backend default: its node catalog and the ETA's history" in live.log()
