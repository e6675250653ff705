"""Waking a backend's GPU worker: a small task on its queue that makes it take the best waiting job.

A job is bound to a GPU only when a GPU takes it (jobs.dispatch). A busy worker takes its next job
itself when its job ends, with no broker round trip; a new job wakes the idle backends that could run
it. Each backend's queue holds at most one pending wake (a SET NX in the cache, cleared when the
wake runs), so a burst of 1,000 submits sends one message per idle backend, not 1,000. A lost wake
is harmless: the beat sweep wakes idle backends with waiting jobs (jobs.sweeps).
"""

from __future__ import annotations

from collections.abc import Iterable

from celery import current_app
from django.core.cache import cache
from django.db import transaction

from fleet.backends import gpu_queue

BACKEND_WORK_TASK = "jobs.tasks.backend_work"  # by name: jobs.tasks imports the tracker
# A pending wake's mark outlives a lost message by this much at most.
WAKE_MARK_SECONDS = 60


def wake_mark(backend: str) -> str:
    return f"dispatch-wake:{backend}"


def backends_wake(backends: Iterable[str], *, countdown: float = 0, force: bool = False) -> None:
    """After the transaction commits, wake each backend's worker (once while a wake is pending).
    A wake for later (a retry's backoff) is always sent: it must not hold back the wakes of now;
    so is a forced one (the sweep's, when the backend's queue is empty: the pending wake was lost)."""
    for backend in backends:
        if force:
            cache.set(wake_mark(backend), 1, timeout=WAKE_MARK_SECONDS)
        elif countdown <= 0 and not cache.add(wake_mark(backend), 1, timeout=WAKE_MARK_SECONDS):
            continue
        _send_on_commit(backend, countdown)


def _send_on_commit(backend: str, countdown: float) -> None:
    task = current_app.signature(BACKEND_WORK_TASK, args=(backend,))
    transaction.on_commit(lambda: task.apply_async(queue=gpu_queue(backend), countdown=max(countdown, 0)))


def wake_received(backend: str) -> None:
    """The worker took its wake: the next job created may send another."""
    cache.delete(wake_mark(backend))
