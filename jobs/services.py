"""Everything that changes a job: create, enqueue, transition, progress, cancel, outputs.

`job_transition` is the only function that changes a job's status, by compare-and-set.
"""

from __future__ import annotations

import logging
import mimetypes
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import IO, Any

from django.conf import settings
from django.core.files.base import File
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from jobs.broadcast import job_broadcast
from jobs.comfyui_client import ComfyUIClient, OutputFile
from jobs.models import ACTIVE_STATUSES, TRANSITION_TIMESTAMPS, Job, JobOutput, JobStatus, transition_allowed

logger = logging.getLogger(__name__)

# Progress fields the tracker writes at a bounded rate.
PROGRESS_FIELDS = (
    "current_node_id",
    "current_node_class",
    "current_node_name",
    "step_value",
    "step_max",
    "nodes_total",
    "nodes_done",
    "cached_nodes",
    "progress",
    "seq",
    "heartbeat_at",
)


class IllegalTransition(Exception):
    pass


def backend_client(backend: str) -> ComfyUIClient:
    return ComfyUIClient(settings.COMFYUI_BACKENDS[backend], timeout=settings.COMFYUI_HTTP_TIMEOUT)


def gpu_queue(backend: str) -> str:
    return f"gpu.{backend}"


def job_state(job: Job) -> dict[str, Any]:
    from jobs.serializers import JobSerializer

    return JobSerializer(job).data


def job_broadcast_now(job: Job) -> None:
    job_broadcast(job_state(job), job.user_id)


def progress_values(job: Job) -> dict[str, Any]:
    """The progress fields as the in-memory job holds them, to save along with a transition."""
    return {name: getattr(job, name) for name in PROGRESS_FIELDS if name not in ("seq", "heartbeat_at")}


def job_publish(job: Job) -> None:
    """Broadcast the job's current state, after the surrounding transaction commits."""
    transaction.on_commit(lambda: job_broadcast(job_state(job), job.user_id))


def job_create(
    *, user: Any, workflow: dict[str, Any], job_type: str, priority: int = 5, backend: str | None = None
) -> Job:
    with transaction.atomic():
        job = Job.objects.create(
            user=user if getattr(user, "is_authenticated", False) else None,
            workflow=workflow,
            job_type=job_type,
            priority=priority,
            backend=backend or settings.COMFYUI_DEFAULT_BACKEND,
        )
        job_enqueue(job)
    return job


def job_enqueue(job: Job) -> None:
    from jobs.tasks import job_run

    # Redis emulates priorities with one list per step and serves step 0 first.
    broker_priority = 9 - job.priority
    transaction.on_commit(
        lambda: job_run.apply_async((str(job.id),), queue=gpu_queue(job.backend), priority=broker_priority)
    )


def job_transition(job: Job, new_status: str, *, expected: str | None = None, **fields: Any) -> bool:
    """Move `job` to `new_status` if it is still in `expected` (default: its current status).

    Compare-and-set: zero rows updated means someone else moved it first; the instance is then
    refreshed and False returned. An illegal transition raises.
    """
    current = expected or job.status
    if not transition_allowed(current, new_status):
        raise IllegalTransition(f"job {job.id}: {current} -> {new_status} is not allowed")
    now = timezone.now()
    stamp = TRANSITION_TIMESTAMPS.get(new_status)
    if stamp:
        fields.setdefault(stamp, now)
    fields["seq"] = job.seq + 1
    with transaction.atomic():
        updated = Job.objects.filter(pk=job.pk, status=current).update(status=new_status, **fields)
        if not updated:
            job.refresh_from_db()
            return False
        job.status = new_status
        for name, value in fields.items():
            setattr(job, name, value)
        if new_status == JobStatus.COMPLETED:
            job.progress = 1.0
            Job.objects.filter(pk=job.pk).update(progress=1.0)
        job_publish(job)
    logger.info("job %s: %s -> %s", job.id, current, new_status)
    return True


def job_fail(job: Job, category: str, message: str, details: dict[str, Any] | None = None) -> bool:
    return job_transition(
        job,
        JobStatus.FAILED,
        failure_category=category,
        error_message=message[:10_000],
        error_details=details or {},
    )


def job_progress_save(job: Job) -> bool:
    """Write the tracker's latest progress; only while the job is still active."""
    job.heartbeat_at = timezone.now()
    values = {**progress_values(job), "seq": job.seq, "heartbeat_at": job.heartbeat_at}
    return bool(Job.objects.filter(pk=job.pk, status__in=ACTIVE_STATUSES).update(**values))


def job_heartbeat(job: Job) -> None:
    job.heartbeat_at = timezone.now()
    Job.objects.filter(pk=job.pk).update(heartbeat_at=job.heartbeat_at)


def job_claim(job: Job, *, client_id: str, worker: str, stale_after: timedelta) -> bool:
    """Become the job's tracker: it is waiting, or its last tracker stopped beating.

    A second delivery of the same task while the first one is alive claims nothing.
    """
    now = timezone.now()
    stale = Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=now - stale_after)
    claimable = Q(status=JobStatus.QUEUED) | (Q(status__in=ACTIVE_STATUSES) & stale)
    updated = Job.objects.filter(Q(pk=job.pk) & claimable).update(
        client_id=client_id, worker=worker, heartbeat_at=now, deliveries=F("deliveries") + 1
    )
    job.refresh_from_db()
    return bool(updated)


def job_cancel(job: Job) -> Job:
    """A waiting job never reaches ComfyUI; an active one is removed or interrupted by its tracker."""
    if job.status == JobStatus.QUEUED and job_transition(job, JobStatus.CANCELLED, expected=JobStatus.QUEUED):
        return job
    if job.status in ACTIVE_STATUSES and job.cancel_requested_at is None:
        now = timezone.now()
        Job.objects.filter(pk=job.pk, status__in=ACTIVE_STATUSES).update(cancel_requested_at=now)
        job.refresh_from_db()
    return job


def job_cancel_requested(job: Job) -> bool:
    return Job.objects.filter(pk=job.pk, cancel_requested_at__isnull=False).exists()


def job_output_store(job: Job, client: ComfyUIClient, output: OutputFile) -> JobOutput:
    """Fetch one output through /view into the project's storage and record it (idempotent)."""
    existing = JobOutput.objects.filter(
        job=job,
        node_id=output.node_id,
        comfy_subfolder=output.subfolder,
        comfy_filename=output.filename,
        comfy_type=output.type,
    ).first()
    if existing is not None:
        return existing
    media_type = mimetypes.guess_type(output.filename)[0] or "application/octet-stream"
    record = JobOutput(
        job=job,
        node_id=output.node_id,
        kind=output.kind,
        comfy_filename=output.filename,
        comfy_subfolder=output.subfolder,
        comfy_type=output.type,
        media_type=media_type,
    )
    with _spooled(client.view(output)) as spool:
        record.size_bytes = spool.seek(0, 2)
        spool.seek(0)
        record.file.save(output.filename, File(spool), save=False)
    try:
        record.save()
    except IntegrityError:  # a concurrent tracker stored it first
        record.file.delete(save=False)
        return JobOutput.objects.get(
            job=job,
            node_id=output.node_id,
            comfy_subfolder=output.subfolder,
            comfy_filename=output.filename,
            comfy_type=output.type,
        )
    return record


@contextmanager
def _spooled(chunks: Iterator[bytes]) -> Iterator[IO[bytes]]:
    """Collect a chunk stream into a temporary file, so large videos never sit in memory."""
    with tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool:
        for chunk in chunks:
            spool.write(chunk)
        spool.seek(0)
        yield spool
