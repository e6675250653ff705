"""Celery tasks: thin. They take ids and call a service."""

from celery import shared_task

from jobs import sweeps
from jobs.tracking import job_track


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def job_run(job_id: str) -> None:
    """Submit the job's prompt to its GPU's ComfyUI and follow it to the end (GPU queue only)."""
    job_track(job_id)


@shared_task(ignore_result=True)
def sweep_jobs() -> None:
    """Orphaned, stuck, timed-out, forgotten and blocked jobs (beat, default queue)."""
    sweeps.sweep_orphaned_jobs()
    sweeps.sweep_stuck_jobs()
    sweeps.sweep_waiting_jobs()
    sweeps.sweep_blocked_jobs()
