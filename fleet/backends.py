"""The GPU backends the studio configured: their names, clients, Celery queues and drain state.

Backend URLs come from settings only (ComfyUI has no authentication: docs/HAZARDS.md).
"""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from comfyui import ComfyUIClient
from fleet.catalog import backend_facts_forget
from fleet.models import Backend


def gpu_queue(backend: str) -> str:
    """The Celery queue that the one GPU worker of `backend` consumes."""
    return f"gpu.{backend}"


def backend_client(backend: str, *, timeout: float | None = None) -> ComfyUIClient:
    url = settings.COMFYUI_BACKENDS[backend]
    return ComfyUIClient(url, timeout=settings.COMFYUI_HTTP_TIMEOUT if timeout is None else timeout)


def backend_is_draining(name: str) -> bool:
    return Backend.objects.filter(name=name, draining=True).exists()


def draining_backends() -> set[str]:
    return set(Backend.objects.filter(draining=True).values_list("name", flat=True))


def backend_set_draining(name: str, draining: bool) -> Backend:
    """Drain a backend (finish what runs, take nothing new) or put it back in service.

    Compare-and-set, so `draining_since` keeps the moment the drain began when it is set twice.
    """
    backend_facts_forget()
    backend, _ = Backend.objects.get_or_create(name=name)
    Backend.objects.filter(pk=backend.pk, draining=not draining).update(
        draining=draining, draining_since=timezone.now() if draining else None
    )
    backend.refresh_from_db()
    return backend


def backend_names() -> list[str]:
    """Configured backends first, then any that has a drain row but is no longer configured."""
    configured = list(settings.COMFYUI_BACKENDS)
    extra = Backend.objects.exclude(name__in=configured).values_list("name", flat=True)
    return configured + sorted(extra)
