"""Celery tasks: thin. They take ids and call a service."""

from celery import shared_task

from jobs import services, sweeps, tracking


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def job_run(job_id: str) -> None:
    """Follow one job by id on its GPU's ComfyUI (GPU queue only): re-attaching to an active job."""
    tracking.job_track(job_id)


# Acked when done, and put back when the pool child dies: the next delivery re-attaches to the job it
# was following (tracking.backend_work). A duplicate delivery finds its backend busy and stops.
@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def backend_work(backend: str) -> None:
    """A backend's GPU worker takes the waiting jobs it can run, one after another (GPU queue only)."""
    tracking.backend_work(backend)


@shared_task(ignore_result=True)
def queue_announce() -> None:
    """The fleet's queue moved: every waiting job's subscribers told their place (default queue)."""
    services.queue_announce()


@shared_task(ignore_result=True)
def sweep_jobs() -> None:
    """Orphaned, stuck, timed-out, forgotten and blocked jobs (beat, default queue)."""
    sweeps.sweep_orphaned_jobs()
    sweeps.sweep_stuck_jobs()
    sweeps.sweep_waiting_jobs()
    sweeps.sweep_blocked_jobs()
