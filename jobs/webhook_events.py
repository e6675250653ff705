"""A job's changes as webhook events: which status is which event, and what each one carries.

Webhooks sit below jobs (README, "Architecture"): they get plain data from here, never a Job. A
status event carries the job's state as the REST detail shows it (the one computed for the
broadcast), a progress event a compact subset read from the tracker's job in memory (no query);
both add `url`, the job's absolute address. Emitting never raises and never waits on a receiver
(webhooks.services.webhook_job_event).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.conf import settings
from django.urls import reverse

from jobs.models import Job, JobStatus
from webhooks.events import JOB_CANCELLED, JOB_COMPLETED, JOB_FAILED, JOB_PROGRESS, JOB_STARTED, Subject
from webhooks.services import webhook_job_event

# The statuses whose entry is an event (a job back in the queue for another attempt is none).
STATUS_EVENTS: dict[str, str] = {
    JobStatus.RUNNING: JOB_STARTED,
    JobStatus.COMPLETED: JOB_COMPLETED,
    JobStatus.FAILED: JOB_FAILED,
    JobStatus.CANCELLED: JOB_CANCELLED,
}


def job_subject(job: Job) -> Subject:
    return Subject(job_id=str(job.pk), owner_id=job.user_id, job_type=job.job_type, backend=job.backend)


def job_url(job: Job) -> str:
    return settings.WEBHOOK_PUBLIC_URL + reverse("job-detail", kwargs={"pk": job.pk})


def job_state_webhook(job: Job, event: str, state: dict[str, Any]) -> None:
    """A status event (STATUS_EVENTS) with the job's state as REST shows it."""
    webhook_job_event(event=event, subject=job_subject(job), data={**state, "url": job_url(job)})


def job_progress_webhook(job: Job) -> None:
    """job.progress (throttled per job by webhooks.services): where the job is, from memory."""
    webhook_job_event(event=JOB_PROGRESS, subject=job_subject(job), data=partial(progress_data, job))


def progress_data(job: Job) -> dict[str, Any]:
    current = (
        {"id": job.current_node_id, "class_type": job.current_node_class, "name": job.current_node_name}
        if job.current_node_id
        else None
    )
    step = {"value": job.step_value, "max": job.step_max} if job.step_max is not None else None
    eta = {"estimate": True, "finish_at": job.eta_finish_at.isoformat()} if job.eta_finish_at else None
    return {
        "id": str(job.pk),
        "status": job.status,
        "attempt": job.attempt,
        "progress": job.progress,
        "progress_percent": round(job.progress * 100, 1),
        "message": job.progress_message,
        "current_node": current,
        "step": step,
        "nodes_done": job.nodes_done,
        "nodes_total": job.nodes_total,
        "eta": eta,
        "url": job_url(job),
    }
