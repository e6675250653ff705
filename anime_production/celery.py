import os
from typing import Any

from celery import Celery, signals
from django.db import close_old_connections

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "anime_production.settings")

app = Celery("anime_production")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.task_prerun.connect
@signals.task_postrun.connect
def database_connections_checked(task: Any = None, **_: Any) -> None:
    """Around each task, what Django does around each request: a connection older than CONN_MAX_AGE,
    or left unusable, is closed; a kept one is health-checked before its first query. Not Celery's
    fixup, which closed every connection at every task (settings.CELERY_DB_REUSE_MAX turns it off):
    each wake task connected to PostgreSQL anew, ~8 ms of a free GPU's wait (traced in the GPU worker,
    devtools/benchmarks/dispatch_fleet.py). Not for a task run eagerly, inside its caller's transaction."""
    if task is not None and getattr(task.request, "is_eager", False):
        return
    close_old_connections()


# The queues this worker consumes (its -Q), noted in the main process before the pool forks.
_worker_queues: list[str] = []


@signals.celeryd_init.connect
def worker_queues_noted(options: dict[str, Any] | None = None, **_: Any) -> None:
    _worker_queues[:] = list((options or {}).get("queues") or [])


@signals.worker_init.connect
def worker_warms_up(**_: Any) -> None:
    """The worker's main process imports what a web process imports before it serves
    (anime_production/warm_up.py), before its pool forks: every pool process has it. A GPU worker's
    first job otherwise built the URL resolver (every view module, 262 ms in-process, cProfile of a
    new worker's first take) to name the job in its first progress webhook, right after its prompt
    went in, and read none of ComfyUI's messages meanwhile. Then what it loaded is frozen out of the
    cyclic collector's way (anime_production/collector.py). Nothing here touches the network."""
    from anime_production.collector import startup_objects_frozen
    from anime_production.warm_up import warm_up

    warm_up()
    startup_objects_frozen()


@signals.worker_process_init.connect
def pool_process_reads_ahead(**_: Any) -> None:
    """A GPU worker's pool process fetches its backend's node catalog and reads the ETA's history
    as it starts, in the background (jobs/tracking/read_ahead.py)."""
    from jobs.tracking.read_ahead import gpu_worker_read_ahead

    gpu_worker_read_ahead(_worker_queues)
