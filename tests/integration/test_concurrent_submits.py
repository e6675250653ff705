"""One studio machine on the default database (SQLite unless DATABASE_URL says otherwise): many
submits at once through daphne, while a real worker runs jobs through the simulator and the roll-ups
refresh, without a single error and with every job stored and run.

SQLite once answered concurrent POSTs with "database is locked" (docs/HAZARDS.md); WAL, IMMEDIATE
transactions and a busy timeout are what this holds to.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from django.db import connection

from devtools.processes import running_processes
from jobs.models import Job, JobStatus
from monitoring.rollups import stats_rollup_refresh
from tests.conftest import wait_for
from tests.factories import api_key_for
from tests.integration.test_job_lifecycle import sleep_workflow

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SUBMITS = 80
THREADS = 8
ERROR_MARKS = ("database is locked", "OperationalError", "Internal Server Error", "Traceback")


class RollupsRefreshing:
    """stats_rollup_refresh in a loop on its own connection, as beat runs it, until stopped."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.refreshes = 0
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name="rollups", daemon=True)

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    stats_rollup_refresh()
                    self.refreshes += 1
                except Exception as exc:
                    self.errors.append(exc)
                self.stop.wait(0.2)
        finally:
            connection.close()

    def __enter__(self) -> RollupsRefreshing:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def test_concurrent_submits_while_jobs_run_and_rollups_refresh(live: Any, web_server: str, user: Any) -> None:
    key = api_key_for(user)
    local = threading.local()
    lock = threading.Lock()
    in_flight = [0, 0]  # now, most at once
    # The processes serve the whole session: look only at what they write during this test.
    log_starts = {process.name: len(process.full_output()) for process in running_processes()}

    def submit(n: int) -> tuple[int, str]:
        if not hasattr(local, "http"):
            local.http = requests.Session()
            local.http.trust_env = False
            local.http.headers["X-API-Key"] = key
        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight)
        try:
            response = local.http.post(
                f"{web_server}/api/jobs/",
                json={"workflow": sleep_workflow(0.01, prefix=f"burst{n}"), "job_type": "image"},
                timeout=60,
            )
        except requests.RequestException as exc:
            return 0, repr(exc)
        finally:
            with lock:
                in_flight[0] -= 1
        return response.status_code, response.text

    with RollupsRefreshing() as rollups, ThreadPoolExecutor(THREADS) as pool:
        answers = list(pool.map(submit, range(SUBMITS)))
        failed = [answer for answer in answers if answer[0] != 201]
        assert not failed, f"{len(failed)} of {SUBMITS} submits failed, e.g. {failed[:3]}"
        ids = {json.loads(text)["id"] for _, text in answers}
        assert len(ids) == SUBMITS and Job.objects.filter(pk__in=ids).count() == SUBMITS
        assert in_flight[1] >= THREADS // 2, f"at most {in_flight[1]} submits were in flight at once"

        def all_final() -> bool:
            return (
                not Job.objects.filter(pk__in=ids).exclude(status__in=[JobStatus.COMPLETED, JobStatus.FAILED]).exists()
            )

        wait_for(all_final, timeout=300, interval=0.5, message=f"{SUBMITS} jobs to finish")
        time.sleep(1)  # one more refresh over the finished jobs

    outcomes = list(Job.objects.filter(pk__in=ids).values_list("status", "error_message"))
    assert [o for o in outcomes if o[0] != JobStatus.COMPLETED] == []
    assert rollups.errors == [] and rollups.refreshes > 0
    for process in running_processes():
        log = process.full_output()[log_starts.get(process.name, 0) :]
        assert not [mark for mark in ERROR_MARKS if mark in log], f"{process.name}:\n{log[-3000:]}"
