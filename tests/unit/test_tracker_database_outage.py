"""How long a tracker holds its writes while the database is down, and how often it tries again
(jobs/tracking/database_outage.py). The whole path, with PostgreSQL really restarted under a running
job: tests/integration/test_database_faults.py."""

from __future__ import annotations

import time
import uuid

import pytest
from django.db import OperationalError

from jobs.models import Job
from jobs.tracking.database_outage import RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS, DatabaseOutage, ride_seconds
from jobs.tracking.ending import TrackingEnded


@pytest.fixture
def outage() -> DatabaseOutage:
    return DatabaseOutage(Job(id=uuid.uuid4()))


def test_the_tracker_rides_out_less_than_the_stale_window_less_two_heartbeats(settings) -> None:
    settings.TRACKER_STALE_SECONDS = 20
    assert ride_seconds() == 10  # heartbeats every 5 s: a sweep cannot take the job for an orphan meanwhile
    settings.TRACKER_STALE_SECONDS = 4
    assert ride_seconds() == 2


def test_writes_are_tried_again_with_backoff_not_at_every_message(outage: DatabaseOutage) -> None:
    assert outage.retry_due()
    outage.failed(OperationalError("connection refused"))
    assert not outage.retry_due()
    assert outage.receive_timeout(0.005) == pytest.approx(RETRY_FIRST_SECONDS, abs=0.05)
    waits = []
    for _ in range(6):
        before = outage.retry_at
        outage.failed(OperationalError("connection refused"))
        waits.append(round(outage.retry_at - time.monotonic(), 1))
        assert outage.retry_at >= before
    assert waits == sorted(waits) and waits[-1] == pytest.approx(RETRY_MAX_SECONDS, abs=0.1)


def test_the_outage_ends_at_the_first_write_that_succeeds(outage: DatabaseOutage) -> None:
    outage.failed(OperationalError("connection refused"))
    outage.over()
    assert outage.retry_due() and outage.since is None
    assert outage.receive_timeout(0.3) == 0.3  # the coalescer decides again


def test_past_the_ride_the_tracker_stops_and_leaves_the_job_to_the_sweep(settings, outage: DatabaseOutage) -> None:
    settings.TRACKER_STALE_SECONDS = 0.4  # heartbeats every 0.1 s: rides 0.2 s
    outage.failed(OperationalError("connection refused"))
    time.sleep(0.25)
    with pytest.raises(TrackingEnded):
        outage.failed(OperationalError("connection refused"))
