"""Backend health: is each ComfyUI reachable, how long is its queue, how much VRAM is free, and
what it can run (its /object_info, kept in fleet.catalog for routing)."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.utils import timezone

from comfyui import ComfyUIClient, ComfyUIError
from fleet.backends import backend_client
from fleet.catalog import backend_catalog_store, backend_reachable_record
from fleet.models import Backend
from monitoring.models import BackendHealthSample

logger = logging.getLogger(__name__)

# /object_info is megabytes: read again this often, and at once when a backend comes back (a ComfyUI
# restart is when nodes and models get installed).
CATALOG_REFRESH = timedelta(minutes=5)


def backend_health_probe(backend: str) -> BackendHealthSample:
    client = backend_client(backend, timeout=5.0)
    sample = BackendHealthSample(backend=backend, reachable=False)
    try:
        queue = client.queue()
        stats = client.system_stats()
    except ComfyUIError as exc:
        sample.error = str(exc)[:2000]
    else:
        sample.reachable = True
        sample.queue_running = len(queue.running)
        sample.queue_pending = len(queue.pending)
        devices = stats.get("devices") or [{}]
        sample.vram_total = devices[0].get("vram_total")
        sample.vram_free = devices[0].get("vram_free")
    sample.save()
    if sample.reachable:
        backend_catalog_refresh(backend, client)
    backend_reachable_record(backend, sample.reachable)
    return sample


def backend_catalog_refresh(backend: str, client: ComfyUIClient) -> None:
    """Store what the backend can run when it may have changed (routing reads it: jobs.fit)."""
    row = Backend.objects.filter(name=backend).values("reachable", "catalog_at").first()
    fresh = row and row["reachable"] and row["catalog_at"] and timezone.now() - row["catalog_at"] < CATALOG_REFRESH
    if fresh:
        return
    try:
        info = client.object_info()
    except ComfyUIError as exc:
        logger.warning("backend %s: no /object_info (%s); what it can run stays as last known", backend, exc)
        return
    if backend_catalog_store(backend, info):
        logger.info("backend %s: its node classes or model files changed", backend)
