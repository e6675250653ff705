"""Backend health: is each ComfyUI reachable, how long is its queue, how much VRAM is free."""

from __future__ import annotations

from comfyui import ComfyUIError
from fleet.backends import backend_client
from monitoring.models import BackendHealthSample


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
    return sample
