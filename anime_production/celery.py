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
