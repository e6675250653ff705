"""The simulated GPU: what `/system_stats` reports and what loading a checkpoint costs in VRAM."""

from __future__ import annotations

import os
import sys
from typing import Any

GIB = 1024**3
# Memory the driver and other processes hold before ComfyUI loads anything.
_BASELINE_USED = GIB // 2
# torch reserves a little more than the weights it holds.
_TORCH_OVERHEAD = GIB // 4

COMFYUI_VERSION = "0.8.0"
PYTORCH_VERSION = "2.9.1+cu128"
DEVICE_NAME = "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync"


def checkpoint_size(name: str) -> int:
    """Rough VRAM footprint of a checkpoint, by family."""
    lowered = name.lower()
    if "xl" in lowered:
        return int(6.5 * GIB)
    if "flux" in lowered:
        return 12 * GIB
    return 2 * GIB


class DeviceMemory:
    def __init__(self, total_gb: float) -> None:
        self.total = int(total_gb * GIB)
        self._loaded: dict[str, int] = {}

    def load_checkpoint(self, name: str) -> None:
        self._loaded[name] = checkpoint_size(name)

    def unload_all(self) -> None:
        self._loaded.clear()

    def _torch_reserved(self) -> int:
        weights = sum(self._loaded.values())
        return min(self.total - _BASELINE_USED, weights + _TORCH_OVERHEAD) if weights else 0

    def device_stats(self) -> dict[str, Any]:
        reserved = self._torch_reserved()
        torch_free = reserved - min(reserved, sum(self._loaded.values()))
        return {
            "name": DEVICE_NAME,
            "type": "cuda",
            "index": 0,
            "vram_total": self.total,
            # ComfyUI counts memory torch reserved but does not use as free.
            "vram_free": self.total - _BASELINE_USED - reserved + torch_free,
            "torch_vram_total": reserved,
            "torch_vram_free": torch_free,
        }


def system_stats(device: DeviceMemory) -> dict[str, Any]:
    ram_total, ram_free = _ram()
    return {
        "system": {
            "os": sys.platform,
            "ram_total": ram_total,
            "ram_free": ram_free,
            "comfyui_version": COMFYUI_VERSION,
            "required_frontend_version": "1.36.14",
            "installed_templates_version": "0.7.65",
            "required_templates_version": "0.7.65",
            "python_version": sys.version,
            "pytorch_version": PYTORCH_VERSION,
            "embedded_python": False,
            "argv": sys.argv,
        },
        "devices": [device.device_stats()],
    }


def _ram() -> tuple[int, int]:
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return page * os.sysconf("SC_PHYS_PAGES"), page * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 32 * GIB, 16 * GIB
