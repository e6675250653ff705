from celery import shared_task
from django.conf import settings

from monitoring.health import backend_health_probe
from monitoring.rollups import stats_rollup_refresh


@shared_task(ignore_result=True)
def backend_health_probe_all() -> None:
    for backend in settings.COMFYUI_BACKENDS:
        backend_health_probe(backend)


@shared_task(ignore_result=True)
def stats_rollup_refresh_task() -> None:
    stats_rollup_refresh()
