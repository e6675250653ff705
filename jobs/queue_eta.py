"""When a waiting job should finish: the running job's remaining time, the jobs ahead, its own run.

An estimate, from the node timings of finished jobs (jobs.eta); None when nothing is known.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from jobs import eta
from jobs.models import ACTIVE_STATUSES, Job, JobStatus

JOBS_AHEAD_LIMIT = 50


def job_queue_eta_finish_at(job: Job) -> datetime | None:
    now = timezone.now()
    ahead = (
        Job.objects.filter(backend=job.backend, status=JobStatus.QUEUED)
        .filter(Q(priority__gt=job.priority) | Q(priority=job.priority, created_at__lt=job.created_at))
        .order_by("-priority", "created_at")
        .values_list("id", "workflow")[:JOBS_AHEAD_LIMIT]
    )
    active = Job.objects.filter(backend=job.backend, status__in=ACTIVE_STATUSES).values_list("eta_finish_at", flat=True)
    if not active:
        running_remaining: float | None = 0.0  # the GPU is idle
    else:
        finish_at = active[0]
        running_remaining = max((finish_at - now).total_seconds(), 0.0) if finish_at else None
    waiting = eta.queue_eta_seconds(job.backend, [(str(i), w) for i, w in ahead], running_remaining)
    own = eta.expected_total_seconds(job.backend, job.workflow)
    if waiting is None or own is None:
        return None
    return now + timedelta(seconds=waiting + own)
