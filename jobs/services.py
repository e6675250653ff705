"""Everything that changes a job: create, enqueue, transition, progress, cancel, retry, outputs.

`job_transition` is the only function that changes a job's status, by compare-and-set.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.core.files.storage import Storage, default_storage
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from assets.media_types import RASTER_IMAGE_EXTENSIONS, SNIFF_BYTES, sniff
from assets.references import asset_references
from assets.services import asset_uses_record, asset_uses_release
from comfyui import ComfyUIClient, OutputFile
from fleet.backends import gpu_queue
from fleet.catalog import backend_facts
from jobs import dependencies, fit, live_state, selectors
from jobs.broadcast import groups_broadcast, job_broadcast
from jobs.eta import workflow_fingerprint
from jobs.facts_served import facts_served
from jobs.failures import failure_from_internal_error, stored_details, stored_message
from jobs.fair_share import fair_turn_next
from jobs.instruments import job_transitioned
from jobs.labels import NO_LABELS, JobLabels
from jobs.models import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    PROGRESS_FIELDS,
    TRANSITION_TIMESTAMPS,
    EventKind,
    FailureCategory,
    Job,
    JobAttempt,
    JobDependency,
    JobEvent,
    JobGroup,
    JobOutput,
    JobStatus,
    JobTag,
    NodeTiming,
    output_upload_path,
    transition_allowed,
)
from jobs.output_files import OutputKey, ViewStream, output_identity, output_key, output_kind, stored_key
from jobs.queue_announcements import FLEET_QUEUE_GROUP, announcement
from jobs.row_update import RowUpdated, progress_update, status_update
from jobs.thumbnails import output_thumbnail_store
from jobs.wake import backend_wake_first, backends_wake
from jobs.webhook_events import STATUS_EVENTS, job_progress_webhook, job_state_webhook
from quotas.admission import submit_check
from webhooks.services import job_webhook_copy, job_webhook_create

logger = logging.getLogger(__name__)

JOB_RUN_TASK = "jobs.tasks.job_run"  # the tracking task, on the backend's GPU queue

# What a new attempt starts from.
PROGRESS_RESET: dict[str, Any] = {
    "current_node_id": "",
    "current_node_class": "",
    "current_node_name": "",
    "current_node_category": "",
    "step_value": None,
    "step_max": None,
    "nodes_done": 0,
    "cached_nodes": [],
    "progress": 0.0,
    "last_progress_at": None,
    "eta_finish_at": None,
    "preview_at": None,
    "submitted_at": None,
    "started_at": None,
    "cancel_requested_at": None,
}


class IllegalTransition(Exception):
    pass


@dataclass(frozen=True)
class Pending:
    """What a tracker noted since its last write, stored and sent with its next status change: one
    transaction and one broadcast where a write of its own and then the change's made two of each."""

    events: Sequence[JobEvent] = ()  # to store, in order before the change's own status event
    timings: Sequence[NodeTiming] = ()
    unsent: Sequence[JobEvent] = ()  # stored already, not broadcast yet


NOTHING_PENDING = Pending()


# --- state out: broadcasts ---------------------------------------------------------------------


def job_broadcast_now(
    job: Job, events: Sequence[JobEvent] = (), *, shape: live_state.TrackedJobShape, lists_due: bool = True
) -> tuple[dict[str, Any], bool]:
    """The tracker's broadcast, several a second: shaped by serializers kept for it, only what
    progress changed when nothing else did (jobs.live_state). Progress alone goes to the job lists
    only when `lists_due` (jobs.broadcast.ListPacer). Returns the state, and whether the lists got it."""
    if job.status == JobStatus.QUEUED:
        state, to_lists = selectors.job_state(job), True
    else:
        state = shape.state(job)
        to_lists = lists_due or shape.reshaped
    job_broadcast(state, job.user_id, live_state.live_event_payloads(events), to_lists=to_lists)
    return state, to_lists


def job_publish(job: Job, events: Sequence[JobEvent] = (), *, webhook_event: str | None = None) -> None:
    """Broadcast the job's state (and new timeline events) after the transaction commits; with a
    `webhook_event` (job.started, ...), the same state goes to the job's webhooks."""

    def publish() -> None:
        state = selectors.job_state(job)
        job_broadcast(state, job.user_id, live_state.live_event_payloads(events))
        if webhook_event:
            job_state_webhook(job, webhook_event, state)

    def publish_or_hold() -> None:
        held = _held_publications.get()
        if held is None:
            publish()
        else:
            held.append(publish)

    transaction.on_commit(publish_or_hold)


# Publications committed inside `publications_held`, sent when it ends.
_held_publications: ContextVar[list[Callable[[], None]] | None] = ContextVar("held_publications", default=None)


@contextmanager
def publications_held() -> Iterator[None]:
    """Inside: job states committed wait to be broadcast (and sent to webhooks) until the block
    ends. The tracker publishes `submitted` once its prompt is in ComfyUI: shaping and sending
    it took ~10 ms between a free GPU and its next prompt. What a rolled-back transaction wrote is
    never published, held or not."""
    held: list[Callable[[], None]] = []
    token = _held_publications.set(held)
    try:
        yield
    finally:
        _held_publications.reset(token)
        for publish in held:
            publish()


# Whether the fleet's queue moved inside `queue_moves_held`, announced once when it ends.
_held_queue_moves: ContextVar[set[str] | None] = ContextVar("held_queue_moves", default=None)


@contextmanager
def queue_moves_held() -> Iterator[None]:
    """Inside: the waiting jobs hear of their new places once, when the block ends,
    instead of once per job created or cancelled: a group of 100 jobs would otherwise announce the
    queue 100 times (3-5 ms a send, docs/HAZARDS.md). Inside a transaction the announcements still
    wait for the commit; the tracker holds them until its prompt is in ComfyUI. A block that raises
    still announces what moved before (a rolled-back transaction drops it with everything else)."""
    held: set[str] = set()
    token = _held_queue_moves.set(held)
    try:
        yield
    finally:
        _held_queue_moves.reset(token)
        if held:
            queue_moved()


def queue_moved() -> None:
    """Tell every waiting job its new place and ETA (after one left or jumped the queue). Waiting
    jobs are bound to no backend: the fleet has one queue (jobs.dispatch orders it)."""
    held = _held_queue_moves.get()
    if held is not None:
        held.add(FLEET_QUEUE_GROUP)
        return
    transaction.on_commit(queue_announce_soon)


QUEUE_ANNOUNCE_TASK = "jobs.tasks.queue_announce"  # by name: jobs.tasks imports this module
_ANNOUNCE_PENDING = "queue-announce:pending"
_ANNOUNCED_AT = "queue-announce:at"
# A pending announcement whose task was lost (its worker died) holds the next ones back this long at most.
ANNOUNCE_PENDING_SECONDS = 10


def queue_announce_soon() -> None:
    """Have the default worker announce the fleet's queue: once for however many moves come before
    it does, and not sooner than QUEUE_ANNOUNCE_INTERVAL after the announcement before. Reading the
    queue takes tens of ms at 10,000 waiting, and the queue moves at every submit and every job a
    GPU takes: those pay a cache write (and, once per announcement, a broker message) instead."""
    try:
        if not cache.add(_ANNOUNCE_PENDING, 1, timeout=ANNOUNCE_PENDING_SECONDS):
            return
        last = cache.get(_ANNOUNCED_AT) or 0.0
        delay = max(last + settings.QUEUE_ANNOUNCE_INTERVAL - time.time(), 0.0)
        task = current_app.signature(QUEUE_ANNOUNCE_TASK)
        task.apply_async(queue=settings.CELERY_TASK_DEFAULT_QUEUE, countdown=delay)
    except Exception:  # a broker or cache that is down: the next move asks again
        logger.warning("the fleet's queue could not be announced", exc_info=True)
        _forget_pending()


def _forget_pending() -> None:
    try:
        cache.delete(_ANNOUNCE_PENDING)
    except Exception:
        logger.warning("the pending queue announcement could not be forgotten", exc_info=True)


def queue_announce() -> None:
    """The default worker's task: the fleet's queue as it stands now, in one message for the whole
    queue whatever its length; each waiting job's consumer finds its own place in it
    (jobs.queue_announcements). A move from here on asks for the next announcement."""
    cache.delete(_ANNOUNCE_PENDING)
    cache.set(_ANNOUNCED_AT, time.time(), timeout=ANNOUNCE_PENDING_SECONDS)
    groups_broadcast([FLEET_QUEUE_GROUP], announcement(), what="the fleet's queue")


# --- creating and enqueueing --------------------------------------------------------------------


def job_create(
    *,
    user: Any,
    workflow: dict[str, Any],
    job_type: str,
    priority: int = 5,
    backend: str | None = None,
    retry_of: Job | None = None,
    labels: JobLabels = NO_LABELS,
    requires: Sequence[str] = (),
    group: JobGroup | None = None,
    template_name: str = "",
    template_version: int | None = None,
    webhook: dict[str, Any] | None = None,
    pipeline_key: str = "",
) -> Job:
    """The one way a job comes to be: from the API, a workflow template, a group, a pipeline, a retry.

    `webhook` is the job's own callback as webhooks.serializers.JobWebhookSerializer checked it
    (url, events, optional secret); a retry by hand inherits the original's. A workflow that reads
    another job's output ("output:<job id>/<n>") makes a job that depends on it: `blocked`, in no
    queue, until that job completes (jobs.dependencies).

    It is bound to no backend: the first backend that can run it and is free takes it (jobs.dispatch).
    `backend` (a backend the submitter named) and `requires` (labels) narrow which; a job that no
    configured backend can run (node classes, model files, labels) is refused here, a 400 naming
    what is missing (jobs.fit)."""
    needs = fit.workflow_needs(workflow, requested_backend=backend or "", labels=requires)
    try:
        fit.fit_check(needs, facts_served())
    except ValidationError:
        fit.fit_check(needs, backend_facts())  # refused on facts read lately: not before fresh ones say so
    owner = user if getattr(user, "is_authenticated", False) else None
    submit_check(user, 1)  # over a quota: 429 before anything is written (quotas.admission)
    with transaction.atomic():
        upstreams = dependencies.upstream_jobs_locked(workflow)
        blocked = any(upstream.status != JobStatus.COMPLETED for upstream in upstreams)
        turn = (
            0
            if blocked
            else fair_turn_next(user_id=owner.pk if owner else None, project=labels.project, priority=priority)
        )
        job = Job.objects.create(
            status=JobStatus.BLOCKED if blocked else JobStatus.QUEUED,
            user=owner,
            workflow=workflow,
            job_type=job_type,
            priority=priority,
            requested_backend=backend or "",
            requires=sorted(needs.labels),
            needs=needs.stored(),
            fair_turn=turn,
            enqueued_at=None if blocked else timezone.now(),
            retry_of=retry_of,
            fingerprint=workflow_fingerprint(workflow),
            name=labels.name,
            project=labels.project,
            shot=labels.shot,
            tags=list(labels.tags),
            group=group,
            template_name=template_name,
            template_version=template_version,
            pipeline_key=pipeline_key,
            seq=1,  # its first timeline event, below: no other writer can see the job before it commits
        )
        JobTag.objects.bulk_create([JobTag(job=job, tag=tag) for tag in labels.tags])
        JobDependency.objects.bulk_create([JobDependency(job=job, upstream=upstream) for upstream in upstreams])
        # Which of the user's assets it names (locked against their deletion until the job ends).
        asset_uses_record(job_id=job.id, owner=job.user, references=asset_references(workflow)[0])
        # Kept by job id in the webhooks' own table, as assets keep their uses.
        if webhook and job.user is not None:
            job_webhook_create(job_id=job.id, owner=job.user, **webhook)
        elif retry_of is not None:
            job_webhook_copy(from_job_id=retry_of.id, to_job_id=job.id)
        JobEvent.objects.create(
            job=job,
            seq=1,
            kind=EventKind.STATUS,
            at=timezone.now(),
            data={"to": job.status, "requested_backend": job.requested_backend},
        )
        if blocked:
            if all(upstream.status in FINAL_STATUSES for upstream in upstreams):
                blocked_job_settle(job)  # an upstream ended between the request's check and now
        else:
            backend_wake_first(backends_idle_for(job))  # as job_enqueue, with enqueued_at set above
            queue_moved()
    return job


def job_enqueue(job: Job, *, countdown: float = 0) -> None:
    """A waiting job: wake an idle backend that can run it (after `countdown`: every one, the first
    to ask takes it). An active job whose tracker is gone: a tracking task on its backend's queue
    re-attaches to its prompt."""
    Job.objects.filter(pk=job.pk).update(enqueued_at=timezone.now())
    if job.status == JobStatus.QUEUED:
        if countdown > 0:
            backends_wake(backends_idle_for(job), countdown=countdown)
        else:
            backend_wake_first(backends_idle_for(job))
        return
    # Redis emulates priorities with one list per step and serves step 0 first.
    broker_priority = 9 - job.priority
    # By name: importing jobs.tasks would import the tracker, which imports this module. A signature
    # by name still goes through the registered task's apply_async when that module is loaded.
    run = current_app.signature(JOB_RUN_TASK, args=(str(job.id),))
    transaction.on_commit(
        lambda: run.apply_async(queue=gpu_queue(job.backend), priority=broker_priority, countdown=countdown)
    )


def backends_idle_for(job: Job) -> list[str]:
    """The backends in service, running nothing, that can run the job (two queries)."""
    needs = fit.job_needs(job.requested_backend, job.requires, job.needs)
    busy = set(
        Job.objects.filter(status__in=ACTIVE_STATUSES)
        .exclude(backend="")
        .values_list("backend", flat=True)
        .distinct()
        .order_by()
    )
    return [
        backend.name
        for backend in facts_served()
        if backend.in_service and backend.name not in busy and fit.fits(needs, backend)
    ]


def next_version(job: Job) -> int:
    """State versions are time-based, so writers in different processes (the tracker, a sweep,
    the web) never hand out the same or an older version for a newer state."""
    return max(job.version + 1, time.time_ns() // 1000)


def allocate_seqs(job: Job, count: int) -> int:
    """Reserve `count` timeline numbers; returns the last. Call inside a transaction: the row's
    update lock orders concurrent writers."""
    Job.objects.filter(pk=job.pk).update(seq=F("seq") + count)
    job.seq = Job.objects.filter(pk=job.pk).values_list("seq", flat=True).get()
    return job.seq


def job_event(job: Job, kind: str, *, node_id: str = "", data: dict[str, Any] | None = None) -> JobEvent:
    """Append one event to the job's timeline now (for events outside the tracker's batches)."""
    with transaction.atomic():
        seq = allocate_seqs(job, 1)
        return JobEvent.objects.create(job=job, seq=seq, kind=kind, at=timezone.now(), node_id=node_id, data=data or {})


# --- the state machine --------------------------------------------------------------------------


def job_transition(
    job: Job,
    new_status: str,
    *,
    expected: str | None = None,
    event_data: dict[str, Any] | None = None,
    row_locked: bool = False,
    savepoint: bool = True,
    pending: Pending = NOTHING_PENDING,
    **fields: Any,
) -> bool:
    """Move `job` to `new_status` if it is still in `expected` (default: its current status).

    Compare-and-set: zero rows updated means someone else moved it first; the instance is then
    refreshed and False returned (and nothing `pending` stored). An illegal transition raises. The
    status change is recorded on the timeline in the same transaction and broadcast after it
    commits, with the `pending` events. The compare-and-set returns the new seq in the same round
    trip (jobs.row_update). `row_locked`: inside a transaction that holds the job's row lock since
    before `job` was read, and fails whole when this does (a take): no savepoint. `savepoint`
    False: inside a transaction that fails whole when this raises (job_close), none either.
    """
    current = expected or job.status
    if not transition_allowed(current, new_status):
        raise IllegalTransition(f"job {job.id}: {current} -> {new_status} is not allowed")
    now = timezone.now()
    stamp = TRANSITION_TIMESTAMPS.get(new_status)
    if stamp:
        fields.setdefault(stamp, now)
    if new_status == JobStatus.COMPLETED:
        fields["progress"] = 1.0
    fields["version"] = next_version(job)
    with transaction.atomic(savepoint=savepoint and not row_locked):
        earlier = len(pending.events)
        values = {"status": new_status, **fields}
        # What an instance read with only() lacks comes back with the update (a take's candidate).
        lacking = sorted(job.get_deferred_fields())
        moved = status_update(job.pk, current=current, values=values, seq_added=earlier + 1, load=lacking)
        if moved is None:
            job.refresh_from_db()
            return False
        for name, value in moved.loaded.items():
            setattr(job, name, value)
        job.status = new_status
        for name, value in fields.items():
            setattr(job, name, value)
        job.seq = moved.seq
        event = JobEvent(
            job=job, kind=EventKind.STATUS, at=now, data={"from": current, "to": new_status, **(event_data or {})}
        )
        _timeline_store(job, [*pending.events, event], pending.timings)
        job_publish(job, [*pending.unsent, *pending.events, event], webhook_event=STATUS_EVENTS.get(new_status))
        if JobStatus.QUEUED in (current, new_status):
            queue_moved()
        if new_status in FINAL_STATUSES:
            # Its input assets may be deleted again: job_create recorded a use for each asset its
            # workflow names, and no other (a statement less at the end of most jobs).
            if asset_references(job.workflow)[0]:
                asset_uses_release(job.id)
            downstream_settle(job)
    logger.info("job %s: %s -> %s", job.id, current, new_status)
    job_transitioned(job, current, new_status)
    return True


# Jobs that ended, whose blocked downstream jobs are still to settle, inside `downstream_settle`.
_settling: ContextVar[list[Job] | None] = ContextVar("settling", default=None)


def downstream_settle(upstream: Job) -> None:
    """Release or fail the blocked jobs waiting for a job that just ended, in the same transaction,
    and down the pipeline from each one that fails. A loop, not recursion: a chain of jobs may be
    longer than Python's stack is deep."""
    pending = _settling.get()
    if pending is not None:
        pending.append(upstream)  # a downstream job failed inside the loop below: its turn comes
        return
    pending = [upstream]
    token = _settling.set(pending)
    try:
        while pending:
            for job in dependencies.blocked_downstream(pending.pop()):
                blocked_job_settle(job)
    finally:
        _settling.reset(token)


def blocked_job_settle(job: Job) -> bool:
    """A blocked job whose upstream jobs moved: queue it once all completed with the outputs it
    reads, fail it `dependency_failed` once one did not; True when it moved.

    Its row is locked first: two upstream jobs ending at once in two workers would otherwise each
    read the other as still running and leave it blocked (until the sweep). The second waits for
    the first's commit, then reads both as ended."""
    with transaction.atomic():
        if not Job.objects.select_for_update().filter(pk=job.pk, status=JobStatus.BLOCKED).exists():
            return False
        return _blocked_job_settle(job)


def _blocked_job_settle(job: Job) -> bool:
    verdict = dependencies.release_verdict(job)
    if verdict.waits:
        return False
    if verdict.release:
        turn = fair_turn_next(user_id=job.user_id, project=job.project, priority=job.priority, exclude_id=job.pk)
        moved = job_transition(job, JobStatus.QUEUED, expected=JobStatus.BLOCKED, fair_turn=turn)
        if moved:
            job_enqueue(job)
        return moved
    return job_transition(
        job,
        JobStatus.FAILED,
        expected=JobStatus.BLOCKED,
        failure_category=FailureCategory.DEPENDENCY_FAILED,
        error_message=verdict.problem,
        error_details={"upstream": verdict.upstream} if verdict.upstream else {},
        event_data={"category": FailureCategory.DEPENDENCY_FAILED, "message": verdict.problem[:500]},
    )


def job_fail(job: Job, category: str, message: str, details: dict[str, Any] | None = None) -> bool:
    """Close the attempt as failed; retry the job when the category is worth it, else fail it.
    One transaction: nobody sees the job failed with its attempt still open. What is stored of the
    message and details is bounded (jobs.failures.stored_details): ComfyUI's errors are untrusted."""
    message = stored_message(message)
    details = stored_details(details or {})
    with transaction.atomic():
        job_attempt_close(job, outcome=JobStatus.FAILED, category=category, message=message)
        if retry_allowed(job, category):
            return job_requeue(job, category, message)
        return job_transition(
            job,
            JobStatus.FAILED,
            failure_category=category,
            error_message=message,
            error_details=details,
            event_data={"category": category, "message": message[:500]},
        )


def job_fail_unexpected(job: Job, exc: BaseException) -> bool:
    """End a job whose handling broke on something unforeseen (the tracker's, a sweep's), so that
    nobody takes it up again to break the same way. Never raises: it runs in error handlers."""
    failure = failure_from_internal_error(exc)
    try:
        job.refresh_from_db()
        if job.is_final:
            return False
        return job_fail(job, failure.category, failure.message, failure.details)
    except Exception:
        logger.exception("job %s: could not record its failure (%s)", job.id, failure.message)
        return False


def retry_allowed(job: Job, category: str) -> bool:
    """Transient categories only, within the job's attempts and the category's own limit
    (the attempt that just failed is already counted)."""
    if category not in settings.JOB_RETRY_LIMITS:
        return False
    failures = JobAttempt.objects.filter(job=job, failure_category=category).count()
    return job.attempt < settings.JOB_MAX_ATTEMPTS and failures <= settings.JOB_RETRY_LIMITS[category]


def job_requeue(job: Job, category: str, message: str) -> bool:
    """A new attempt of the same job: a new prompt_id, back in the queue after a backoff."""
    backoff = min(settings.JOB_RETRY_BACKOFF_SECONDS * 2 ** (job.attempt - 1), settings.JOB_RETRY_BACKOFF_MAX)
    not_before = timezone.now() + timedelta(seconds=backoff)
    note = {"retry": True, "category": category, "message": message[:500], "backoff_seconds": backoff}
    if job.status == JobStatus.QUEUED:
        # Nothing reached ComfyUI (it was unreachable): the same prompt_id stays unused.
        moved = bool(
            Job.objects.filter(pk=job.pk, status=JobStatus.QUEUED, attempt=job.attempt).update(
                attempt=job.attempt + 1, not_before=not_before, heartbeat_at=None
            )
        )
        job.refresh_from_db()
        if moved:
            job_event(job, EventKind.ATTEMPT, data=note)
    else:
        moved = job_transition(
            job,
            JobStatus.QUEUED,
            attempt=job.attempt + 1,
            # Unreachable is not gone: the prompt may still run, and the next attempt re-attaches
            # to it instead of running the work twice. Otherwise it is gone or was stopped.
            prompt_id=job.prompt_id if category == FailureCategory.COMFYUI_UNREACHABLE else uuid.uuid4(),
            not_before=not_before,
            client_id="",
            heartbeat_at=None,
            backend="",  # unbound again: any backend that can run it may take the next attempt
            event_data=note,
            **PROGRESS_RESET,
        )
    if moved:
        job_enqueue(job, countdown=backoff)
        logger.info("job %s: attempt %d after %s, in %.0fs", job.id, job.attempt, category, backoff)
    return moved


def job_retry(job: Job) -> Job:
    """A person retries a finished job by hand: a new job linked to the original, made once."""
    return job_retry_get_or_create(job)[0]


def job_retry_get_or_create(job: Job) -> tuple[Job, bool]:
    """The job's manual retry, and whether this call made it. A second retry, or one racing this
    one from another request, gets the same job: the database allows one row per `retry_of`."""
    existing = selectors.job_manual_retry(job)
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            created = job_create(
                user=job.user,
                workflow=job.workflow,
                job_type=job.job_type,
                priority=job.priority,
                backend=job.requested_backend if job.requested_backend in settings.COMFYUI_BACKENDS else None,
                requires=job.requires,
                retry_of=job,
                # The same work under the same names, in the same group (whose summary counts the
                # retry in place of the job it retries: jobs.group_summary).
                labels=job_labels(job),
                group=job.group,
                template_name=job.template_name,
                template_version=job.template_version,
                pipeline_key=job.pipeline_key,
            )
    except IntegrityError:
        # Another request made it between our read and our insert; its enqueue is the only one.
        return Job.objects.get(retry_of=job), False
    return created, True


def job_labels(job: Job) -> JobLabels:
    return JobLabels(name=job.name, project=job.project, shot=job.shot, tags=tuple(job.tags))


# --- attempts ------------------------------------------------------------------------------------


def job_attempt_open(job: Job, *, worker: str) -> JobAttempt:
    attempt, _ = JobAttempt.objects.get_or_create(
        job=job,
        number=job.attempt,
        defaults={
            # Job.save fills it with the job's own id; the field is nullable only for that default.
            "prompt_id": job.prompt_id or job.id,
            "backend": job.backend,
            "worker": worker,
            "submitted_at": timezone.now(),
        },
    )
    return attempt


def job_attempt_close(job: Job, *, outcome: str, category: str = "", message: str = "") -> None:
    JobAttempt.objects.filter(job=job, number=job.attempt, outcome="").update(
        outcome=outcome,
        failure_category=category,
        error_message=message[:10_000],
        finished_at=timezone.now(),
        started_at=job.started_at,
    )


# --- the tracker's coalesced writes -------------------------------------------------------------


def progress_values(job: Job) -> dict[str, Any]:
    """The progress fields as the in-memory job holds them, to save along with a transition."""
    return {name: getattr(job, name) for name in PROGRESS_FIELDS}


def job_progress_save(
    job: Job, events: Sequence[JobEvent] = (), timings: Sequence[NodeTiming] = ()
) -> RowUpdated | None:
    """One write: the latest progress, the new timeline events, the finished node timings; what it
    found (the new seq, whether a cancel is asked for), or None.

    Only while the job is still active in the same attempt; a job closed or requeued meanwhile
    (by a sweep, a cancel) keeps what its new owner wrote (None). The events get their seq here.
    With nothing but progress to store it is one statement (jobs.row_update).
    """
    job.heartbeat_at = timezone.now()
    values = {**progress_values(job), "version": job.version, "heartbeat_at": job.heartbeat_at}
    with transaction.atomic() if events or timings else nullcontext():
        saved = progress_update(
            job.pk, prompt_id=job.prompt_id, statuses=ACTIVE_STATUSES, values=values, seq_added=len(events)
        )
        if saved is None:
            return None
        job.seq = saved.seq
        _timeline_store(job, events, timings)
    job_progress_webhook(job)
    return saved


def _timeline_store(job: Job, events: Sequence[JobEvent], timings: Sequence[NodeTiming]) -> None:
    """Store a tracker's new events, numbered up to the job's seq (already raised by as many in the
    same transaction), and its finished node timings."""
    for seq, event in enumerate(events, start=job.seq - len(events) + 1):
        event.seq = seq
    JobEvent.objects.bulk_create(events)
    NodeTiming.objects.bulk_create(timings)


def job_heartbeat(job: Job) -> None:
    job.heartbeat_at = timezone.now()
    Job.objects.filter(pk=job.pk).update(heartbeat_at=job.heartbeat_at)


def job_heartbeat_attempt(job_id: Any, prompt_id: Any) -> None:
    """A heartbeat for one attempt of an active job, from a thread other than its tracker's (which
    owns the in-memory job): nothing once the job ended or went back to the queue."""
    Job.objects.filter(pk=job_id, status__in=ACTIVE_STATUSES, prompt_id=prompt_id).update(heartbeat_at=timezone.now())


def job_claim(job: Job, *, client_id: str, worker: str, stale_after: timedelta) -> bool:
    """Take over an active job whose tracker stopped beating (a waiting job is won instead by its
    queued -> submitted compare-and-set). A second delivery while the first is alive claims nothing."""
    now = timezone.now()
    stale = Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=now - stale_after)
    updated = Job.objects.filter(Q(pk=job.pk, status__in=ACTIVE_STATUSES) & stale).update(
        client_id=client_id, worker=worker, heartbeat_at=now, deliveries=F("deliveries") + 1
    )
    job.refresh_from_db()
    return bool(updated)


# --- cancel --------------------------------------------------------------------------------------


def job_cancel(job: Job) -> Job:
    """A waiting (or blocked) job never reaches ComfyUI; an active one is removed or interrupted by
    its tracker. Jobs blocked on a cancelled one fail `dependency_failed` (downstream_settle)."""
    waiting = job.status
    if waiting in (JobStatus.QUEUED, JobStatus.BLOCKED) and job_close(job, JobStatus.CANCELLED, expected=waiting):
        return job
    if job.status in ACTIVE_STATUSES and job.cancel_requested_at is None:
        now = timezone.now()
        Job.objects.filter(pk=job.pk, status__in=ACTIVE_STATUSES).update(cancel_requested_at=now)
        job.refresh_from_db()
        job_event(job, EventKind.NOTE, data={"message": "cancel requested"})
    return job


def job_cancel_requested(job: Job) -> bool:
    return Job.objects.filter(pk=job.pk, cancel_requested_at__isnull=False).exists()


def job_close(job: Job, status: str, *, pending: Pending = NOTHING_PENDING, **fields: Any) -> bool:
    """Close the current attempt and the job (completed or cancelled), in one transaction (with what
    its tracker still had `pending`)."""
    with transaction.atomic():
        moved = job_transition(job, status, savepoint=False, pending=pending, **fields)
        if moved:
            job_attempt_close(job, outcome=status)
    return moved


# --- outputs -------------------------------------------------------------------------------------


def job_outputs_read(job: Job) -> dict[OutputKey, JobOutput]:
    """The job's stored outputs, by what names each (jobs.output_files.output_key): one query for a
    whole history's worth of outputs (job_output_store's `kept`)."""
    return {stored_key(record): record for record in JobOutput.objects.filter(job=job)}


def job_output_store(
    job: Job, client: ComfyUIClient, output: OutputFile, *, kept: dict[OutputKey, JobOutput]
) -> JobOutput:
    """Fetch one output through /view straight into the project's storage and record it (idempotent:
    `kept`, the job's outputs as job_outputs_read read them, is looked in first, and the output is
    added to it).

    Its media type is sniffed from its first bytes, never taken from the name ComfyUI gave it, and
    the stored file is named by the project with the sniffed extension (docs/HAZARDS.md). Past
    JOB_OUTPUT_MAX_BYTES the download stops with OutputTooLarge; a download that stops for any
    reason leaves nothing in storage. Its thumbnail is made later (job_thumbnails_make).
    """
    key = output_key(output)
    existing = kept.get(key)
    if existing is None:
        existing = kept[key] = _output_fetch(job, client, output, output_identity(job, key))
    return existing


def _output_fetch(job: Job, client: ComfyUIClient, output: OutputFile, identity: dict[str, Any]) -> JobOutput:
    stream = ViewStream(client.view(output, max_bytes=settings.JOB_OUTPUT_MAX_BYTES))
    try:
        sniffed = stream.media_type()
        record = JobOutput(**identity, kind=output_kind(output), media_type=sniffed.media_type)
        storage = record.file.storage
        name = output_upload_path(record, f"output.{sniffed.extension}")
        try:
            record.file.name = storage.save(name, stream, max_length=record.file.field.max_length)
        except BaseException:
            _storage_discard(storage, name)
            raise
    finally:
        stream.close()
    record.size_bytes = stream.bytes_read
    try:
        record.save()
    except IntegrityError:  # a concurrent tracker stored it first
        record.file.delete(save=False)
        return JobOutput.objects.get(**identity)
    return record


def job_outputs_known(job: Job, outputs: Iterable[JobOutput]) -> None:
    """`outputs`, every output the job has, are what shaping it lists (JobSerializer.get_outputs)
    from now on, with no query: kept on the job as prefetch_related keeps what it read. The end of
    a job is sent ~2 ms sooner, and its state with the thumbnails reads nothing either."""
    listed: Any = JobOutput.objects.filter(job=job)  # its cache filled as prefetch_related fills it
    listed._result_cache = sorted(outputs, key=lambda output: output.pk)
    listed._prefetch_done = True
    cache: dict[str, Any] = job.__dict__.setdefault("_prefetched_objects_cache", {})
    cache[Job.outputs.rel.cache_name] = listed


def job_thumbnails_make(job: Job, outputs: Sequence[JobOutput]) -> None:
    """The thumbnails of a job's stored outputs, made once the job has ended and its end was sent:
    decoding a 1024-pixel PNG took 25 ms, every image of a batch before `completed` reached anyone
    (/tmp measurement, 2026-12-07). The job's state is sent again with them, as a new version.
    Never raises: an output without a thumbnail is stored all the same (`make_thumbnails` fills
    them in later)."""
    made = [output for output in outputs if not output.thumbnail and output_thumbnail_store(output)]
    if not made:
        return
    try:
        job.version = next_version(job)
        Job.objects.filter(pk=job.pk).update(version=job.version)
        job_publish(job)
    except DatabaseError as exc:
        logger.warning("job %s: its thumbnails are stored but could not be announced: %s", job.id, exc)


def _storage_discard(storage: Storage, name: str) -> None:
    """Remove what a cut-off download wrote, keeping the error that cut it off."""
    try:
        storage.delete(name)
    except Exception:
        logger.exception("could not remove the partial output %s", name)


def job_preview_store(job: Job, image: bytes) -> bool:
    """Keep the latest live preview of a running job (one file per job, replaced); only a raster
    image by its bytes, whatever ComfyUI said it was. True when kept."""
    sniffed = sniff(image[:SNIFF_BYTES])
    if not sniffed.raster_image:
        logger.info("job %s: a preview that is no image (%s) was dropped", job.id, sniffed.media_type)
        return False
    for path in _preview_paths(job):
        if default_storage.exists(path):
            default_storage.delete(path)
    default_storage.save(f"previews/{job.id}.{sniffed.extension}", ContentFile(image))
    job.preview_at = timezone.now()
    return True


def job_preview_path(job: Job) -> str | None:
    return next((path for path in _preview_paths(job) if default_storage.exists(path)), None)


def _preview_paths(job: Job) -> list[str]:
    return [f"previews/{job.id}.{extension}" for extension in RASTER_IMAGE_EXTENSIONS]
