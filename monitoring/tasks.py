from celery import shared_task
from django.conf import settings

from monitoring.health import backend_health_probe


@shared_task(ignore_result=True)
def backend_health_probe_all() -> None:
    for backend in settings.COMFYUI_BACKENDS:
        backend_health_probe(backend)
