"""The fleet's waiting order: priority, fair-share turn, age (then id, so it is total). Backends take
jobs in it (jobs.dispatch), and a waiting job's place and wait are read from it (jobs.selectors,
jobs.queue_announcements).

The dispatch index (`job_dispatch_idx`) holds that order, so the front is a short index walk at any
queue length, if PostgreSQL takes the walk: its statistics lag a burst (autovacuum analyzes a table
once a tenth of its rows changed), and with 10,000 jobs submitted into a big table it still thinks
almost nothing waits and sorts every waiting row instead (14 ms per take at 10,000 waiting against
0.05 ms; docs/HAZARDS.md). Reads of the front therefore run inside `index_order_kept`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection, transaction
from django.db.models import QuerySet

from jobs.models import Job, JobStatus


def waiting_in_order() -> QuerySet[Job]:
    """Every waiting job in the fleet's order; the jobs ahead of one are a prefix of it."""
    return Job.objects.filter(status=JobStatus.QUEUED).order_by("-priority", "fair_turn", "created_at", "id")


@contextmanager
def index_order_kept(*, reset: bool = True) -> Iterator[None]:
    """Within: PostgreSQL reads the waiting order through the dispatch index whatever its statistics
    say (sorting off, for this transaction only; a transaction that goes on after the block gets it
    back, unless `reset` is False: the caller's transaction ends with the block). Elsewhere nothing
    changes."""
    if connection.vendor != "postgresql":
        yield
        return
    continues = connection.in_atomic_block
    with transaction.atomic(savepoint=False):
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_sort = off")
        yield
        if continues and reset:
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL enable_sort TO DEFAULT")
