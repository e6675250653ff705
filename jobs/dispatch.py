"""A free backend takes the best waiting job it can run: the one place a job is bound to a GPU.

Order: priority, then fair share (jobs.fair_share's turn), then age, read through the dispatch
index. One short transaction: the backend's row is locked first, so two workers of one backend
(configured twice by mistake, or a wake redelivered while a job runs) never both take a job for
it; each waiting row is taken with `FOR UPDATE SKIP LOCKED` (PostgreSQL), so backends taking at the
same instant never wait for each other nor take the same job. SQLite's IMMEDIATE transactions
serialize the whole thing instead.

A job is skipped by a backend that cannot run it (jobs.fit), by a user at their running limit
(quotas.limits, when that app is installed), and for a short while by a backend slower than
another free one that can run it: the faster one is woken, and the slower one again when the
preference ends (SPEED_PREFERENCE_SECONDS after the job was made; then any fitting backend takes it),
so a faster backend whose worker is gone holds a job back for seconds, not until the next sweep.
"""

from __future__ import annotations

import importlib
import logging
import socket
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from fleet.catalog import BackendFacts, backend_facts, backend_facts_of
from fleet.models import Backend
from jobs import eta, fit, services
from jobs.facts_served import facts_served
from jobs.models import ACTIVE_STATUSES, Job, JobStatus
from jobs.queue_order import index_order_kept, waiting_in_order
from jobs.wake import backends_wake, wake_spent

logger = logging.getLogger(__name__)

# Waiting rows locked and judged at a time: the first few (the best nearly always fits), then more.
# Each row locked is a write (50 a take made the take 2-3x slower under load).
FIRST_BATCH = 4
BATCH = 50
SCAN_LIMIT = 500  # rows judged per take at most: the rest wait for a later take (or another backend)
SPEED_PREFERENCE_SECONDS = 10.0
SPEED_MARGIN = 0.8  # another free backend is preferred when it is expected to need under 80 % of the time
# A take reads its own backend's row fresh (it locks it); the others' facts (in service, node classes)
# may be this old. Stale, they cost at most a job left to a faster backend just gone, for
# SPEED_PREFERENCE_SECONDS; read each take, they were a query more between a new job and its prompt.
OTHERS_FACTS_MAX_AGE = 5.0
# Older than OTHERS_FACTS_MAX_AGE they are still served while a thread reads them again (a take
# that followed a quiet spell read them itself: one query more before the prompt); older than this,
# read by the take.
OTHERS_FACTS_STALE_SECONDS = 60.0


def tracker_client_id(job: Job) -> str:
    # Stable across deliveries: a tracker that takes over gets the prompt's remaining events.
    return f"tracker-{job.id}"


def users_held() -> set[int]:
    """Users who may not start another job now (quotas.limits), when quotas is installed."""
    if not apps.is_installed("quotas"):
        return set()
    limits = importlib.import_module("quotas.limits")
    return set(limits.users_at_running_limit())


def job_take_next(
    backend: str, *, ending: Job | None = None, woken: bool = False, held: ExitStack | None = None
) -> Job | None:
    """Bind the best waiting job this backend can run to it and mark it submitted (its tracker
    submits the prompt next); None when it runs a job already or nothing fits. `ending`: the job
    this backend's worker is closing, whose prompt ComfyUI is done with (its outputs are still being
    stored): it does not make the backend busy. `woken`: the take that a wake asked for (a job was
    made for this backend, which was idle), when something nearly always waits. Either way the
    backend's pending wake is spent (jobs.wake), once the take has committed; with `held` (what
    the caller holds until the taken job's prompt is in), then, when a job was taken: a busy
    backend is woken by no new job anyway, and the prompt goes in a cache round trip sooner."""
    try:
        job = _take(backend, ending, woken)
    except BaseException:
        wake_spent(backend)
        raise
    if job is not None and held is not None:
        held.callback(wake_spent, backend)
    else:
        wake_spent(backend)
    return job


def _take(backend: str, ending: Job | None, woken: bool) -> Job | None:
    if not woken and not _waiting_for(backend, timezone.now()).exists():
        # One query instead of the take's eight when nothing waits that this backend could take: a
        # job's end looks for a successor before its outputs are stored and before it is closed.
        # Not asked after a wake: the query would be one more between a new job and its prompt.
        return None
    if backend not in settings.COMFYUI_BACKENDS:
        return None
    fleet = {facts.name: facts for facts in _others_facts()}
    held = users_held()
    # Sorting is reset before the commit only when a caller's transaction goes on after the take.
    continues = connection.in_atomic_block
    with transaction.atomic(), index_order_kept(reset=continues):
        row = Backend.objects.select_for_update().filter(name=backend).first()
        if row is None:
            Backend.objects.get_or_create(name=backend)  # its first take: the row to lock from now on
            row = Backend.objects.select_for_update().filter(name=backend).first()
        me = backend_facts_of(backend, row)  # its own, as they are now (draining, reachable)
        if not me.in_service:
            return None
        active = Job.objects.filter(status__in=ACTIVE_STATUSES)
        if ending is not None:
            active = active.exclude(pk=ending.pk)
        busy = set(active.values_list("backend", flat=True).distinct().order_by())
        if backend in busy:
            return None
        free_others = [
            facts for name, facts in fleet.items() if name != backend and name not in busy and facts.in_service
        ]
        deferred = Deferred()
        job = _best_fitting(me, free_others, held, deferred)
        if job is None:
            deferred.wake_later(backend)
            return None
        services.job_transition(
            job,
            JobStatus.SUBMITTED,
            expected=JobStatus.QUEUED,
            backend=backend,
            client_id=tracker_client_id(job),
            worker=socket.gethostname(),
            heartbeat_at=timezone.now(),
            deliveries=job.deliveries + 1,
            event_data={"backend": backend},
            row_locked=True,  # locked by _best_fitting; the take's transaction fails whole
        )  # the columns the candidate was not read with come back with the update
    return job


def _others_facts() -> list[BackendFacts]:
    """The backends' facts as this process read them lately: the others' serve only the speed
    preference (a take reads its own from the row it locks)."""
    return facts_served(fresh=OTHERS_FACTS_MAX_AGE, stale=OTHERS_FACTS_STALE_SECONDS)


def deferred_mark(job_id: Any) -> str:
    return f"dispatch-left-to:{job_id}"


@dataclass
class Deferred:
    """Jobs a backend left to faster free ones: those are woken now, and this backend again when
    the preference ends, so a faster backend whose worker is gone holds nothing back for long."""

    faster: set[str] = field(default_factory=set)
    until: datetime | None = None

    def add(self, faster: str, until: datetime) -> None:
        self.faster.add(faster)
        self.until = until if self.until is None else min(self.until, until)

    def wake_later(self, backend: str) -> None:
        if self.until is None:
            return
        backends_wake(sorted(self.faster))
        backends_wake([backend], countdown=max((self.until - timezone.now()).total_seconds(), 0.0) + 0.1)


def _best_fitting(me: BackendFacts, free_others: list[BackendFacts], held: set[int], deferred: Deferred) -> Job | None:
    now = timezone.now()
    candidates = _waiting_for(me.name, now)
    if held:
        candidates = candidates.exclude(user_id__in=held)
    # The workflow is read only where a speed comparison needs it (a young job, other backends free).
    locked = candidates.select_for_update(skip_locked=True).only(
        "id", "requested_backend", "requires", "needs", "created_at", "deliveries", "version"
    )
    young = now - timedelta(seconds=SPEED_PREFERENCE_SECONDS)
    for offset, size in _batches():
        rows = list(locked[offset : offset + size])
        for row in rows:
            needs = fit.job_needs(row.requested_backend, row.requires, row.needs)
            if not fit.fits(needs, me):
                continue
            faster = None
            others = [facts for facts in free_others if fit.fits(needs, facts)] if row.created_at > young else []
            # The cache is asked (a round trip) only where another free backend could run the job.
            if others and cache.get(deferred_mark(row.pk)) != me.name:
                faster = _faster_elsewhere(row, me, others)
            if faster is not None:
                # Each worker learns timings of its own: two backends could each find the other
                # faster. The one a job was left to takes it, whatever it estimates.
                cache.set(deferred_mark(row.pk), faster, timeout=SPEED_PREFERENCE_SECONDS + 5)
                deferred.add(faster, row.created_at + timedelta(seconds=SPEED_PREFERENCE_SECONDS))
                # That backend takes one job when it wakes: the next job it would be faster for
                # too is this backend's, which finishes it before the faster one could start it.
                free_others = [facts for facts in free_others if facts.name != faster]
                continue
            return row
        if len(rows) < size:
            return None
    return None


def _waiting_for(backend: str, now: datetime) -> QuerySet[Job]:
    """The waiting jobs in order that `backend` may take now, before judging whether it can run them."""
    return (
        waiting_in_order()
        .filter(Q(requested_backend="") | Q(requested_backend=backend))
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
    )


def _batches() -> Iterator[tuple[int, int]]:
    """(offset, size) of each batch of waiting rows judged: a few, then BATCH at a time, up to SCAN_LIMIT."""
    offset, size = 0, FIRST_BATCH
    while offset < SCAN_LIMIT:
        yield offset, size
        offset, size = offset + size, BATCH


def _faster_elsewhere(row: Job, me: BackendFacts, others: list[BackendFacts]) -> str | None:
    """Another of the free backends that can run the job (`others`) expected to finish it clearly
    sooner (learned node timings per backend, jobs.eta); None when there is none. Unknown timings
    prefer nobody; a backend with no timings of its own is estimated from the others' (jobs.eta)."""
    mine = eta.expected_total_seconds(me.name, row.workflow)
    if mine is None:
        return None
    for facts in others:
        theirs = eta.expected_total_seconds(facts.name, row.workflow)
        if theirs is not None and theirs < mine * SPEED_MARGIN:
            return facts.name
    return None


def backends_idle_with_work() -> list[str]:
    """Backends in service and running nothing while jobs wait (the beat sweep wakes them)."""
    if not waiting_in_order().exists():
        return []
    busy = set(Job.objects.filter(status__in=ACTIVE_STATUSES).values_list("backend", flat=True).distinct().order_by())
    return [facts.name for facts in backend_facts() if facts.in_service and facts.name not in busy]
