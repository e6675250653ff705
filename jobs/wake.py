"""Waking a backend's GPU worker: a small task on its queue that makes it take the best waiting job.

A job is bound to a GPU only when a GPU takes it (jobs.dispatch). A busy worker takes its next job
itself when its job ends, with no broker round trip; a new job wakes one idle backend that can run
it, the first with no wake pending. Each backend's queue holds at most one pending wake (a SET NX in
the cache, cleared once the woken backend has taken from the queue), so a burst of submits wakes
each idle backend once, one per job, and 1,000 submits send at most one message per backend. A
wake that is lost, or that went to a backend whose worker is gone, is not forever: the beat sweep
wakes every idle backend with waiting jobs (jobs.sweeps, SWEEP_SECONDS).

Waking every idle backend that could run a new job made them all race for it: one took it, and
on a machine they share, the others' empty takes delayed its prompt (devtools/benchmarks/
dispatch_fleet.py, idle fleet: created -> prompt received).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from celery import current_app
from django.core.cache import cache
from django.db import transaction
from redis.exceptions import RedisError

from access.redis_cache import cache_redis_client
from fleet.backends import gpu_queue

logger = logging.getLogger(__name__)

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
        elif countdown <= 0 and not _wake_marked_pending(backend):
            continue
        _send_on_commit(backend, countdown)


def backend_wake_first(backends: Iterable[str]) -> str | None:
    """After the transaction commits, wake the first of `backends` (those that can run a new job, in
    order of preference) with no wake pending; None when every one has a wake pending already."""
    for backend in backends:
        if _wake_marked_pending(backend):
            _send_on_commit(backend, 0)
            return backend
    return None


def _wake_marked_pending(backend: str) -> bool:
    """Mark a wake pending for the backend; False when one is pending already (SET NX)."""
    return bool(cache.add(wake_mark(backend), 1, timeout=WAKE_MARK_SECONDS))


def _send_on_commit(backend: str, countdown: float) -> None:
    task = current_app.signature(BACKEND_WORK_TASK, args=(backend,))

    def send() -> None:
        # First: a worker staying after its last job takes the job meanwhile. One that said it listens
        # needs no broker message (which would start one more task after this one, to find nothing).
        if countdown <= 0 and _wake_now_push(backend):
            return
        task.apply_async(queue=gpu_queue(backend), countdown=max(countdown, 0))

    transaction.on_commit(send)


def _wake_now_key(backend: str) -> str:
    return f"dispatch-wake-now:{backend}"


def _listening_key(backend: str) -> str:
    return f"dispatch-listening:{backend}"


def _wake_now_push(backend: str) -> bool:
    """Tell a GPU worker that waits after its last job (wake_wait): a list of one entry at most, heard
    once; gone after WAKE_MARK_SECONDS when no worker waited. True when a worker said it listens
    (wake_listen), in the same round trip."""
    key, client = cache.make_and_validate_key(_wake_now_key(backend)), cache_redis_client()
    if client is None:
        return False
    try:
        with client.pipeline(transaction=False) as pipe:
            pipe.lpush(key, 1)
            pipe.ltrim(key, 0, 0)
            pipe.expire(key, WAKE_MARK_SECONDS)
            pipe.exists(cache.make_and_validate_key(_listening_key(backend)))
            return bool(pipe.execute()[-1])
    except RedisError:
        logger.warning("backend %s: its waiting worker was not told; the broker's wake still goes", backend)
        return False


def wake_listen(backend: str, seconds: float) -> None:
    """The backend's worker says it will wait for wakes (wake_wait) and look at the queue for the next
    `seconds` at least: a wake meanwhile sends no broker message. It must look once more after
    wake_unlisten, or after the mark lapsed: a wake that saw the mark sent nothing else."""
    client = cache_redis_client()
    if client is None:
        return
    try:
        client.set(cache.make_and_validate_key(_listening_key(backend)), 1, px=max(int(seconds * 1000), 1))
    except RedisError:
        logger.warning("backend %s: its worker could not say it listens; wakes come through the broker", backend)


def wake_unlisten(backend: str) -> None:
    """The backend's worker stops waiting for wakes: the next wake goes through the broker."""
    client = cache_redis_client()
    if client is None:
        return
    try:
        client.delete(cache.make_and_validate_key(_listening_key(backend)))
    except RedisError:  # the mark lapses by itself within its seconds
        logger.warning("backend %s: its worker's listening mark was not cleared", backend, exc_info=True)


def wake_wait(backend: str, timeout: float) -> bool:
    """Wait up to `timeout` seconds for a wake of `backend`: True when one came (a job was made that
    it may run), False when none came. Where Redis cannot be asked (a cache that is not Redis, an
    error) it waits the timeout out all the same: a caller that looks at the queue between waits
    (jobs.tracking's linger) looks as often as it would, not in a busy loop."""
    key, client = cache.make_and_validate_key(_wake_now_key(backend)), cache_redis_client()
    if client is not None:
        try:
            return client.blpop([key], timeout=max(timeout, 0.01)) is not None
        except RedisError:
            logger.warning("backend %s: waiting for a wake failed; its broker message comes", backend, exc_info=True)
    time.sleep(timeout)
    return False


def wake_spent(backend: str) -> None:
    """The backend took from the queue (or found nothing it can run) after its wake: the next job
    created may wake it again. Not before its take: a job created meanwhile wakes another backend.
    What wake_wait would hear is left: a job made while an empty take looked was told there after
    the look (an entry heard late costs one take that finds nothing)."""
    cache.delete(wake_mark(backend))
