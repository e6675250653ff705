"""What the fleet can run, in ComfyUI's shapes: /object_info, /embeddings, /models, /system_stats.

A job may go to any backend in service, so the front door offers what every reachable backend
offers (the intersection): a node class, embedding or model file that only one GPU machine has would
fail on the others. Each backend is asked at most once per FLEET_INFO_TTL_SECONDS per process
(/object_info is megabytes on a studio install); a backend that does not answer is left out, and
when none answers the lists are empty. What ComfyUI returns is untrusted: the client bounds it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from django.conf import settings

from comfyui import ComfyUIClient, ComfyUIError
from fleet.backends import backend_client, draining_backends

logger = logging.getLogger(__name__)

FLEET_INFO_TTL_SECONDS = 300.0
# A page of the editor waits for these: a backend that is down must not hold it for long.
FLEET_INFO_TIMEOUT_SECONDS = 5.0

T = TypeVar("T")

_cache: dict[tuple[str, str], tuple[float, Any]] = {}
_lock = threading.Lock()


def _backends() -> list[str]:
    draining = draining_backends()
    names = [name for name in settings.COMFYUI_BACKENDS if name not in draining]
    return names or list(settings.COMFYUI_BACKENDS)


def _asked(backend: str, what: str, ask: Callable[[ComfyUIClient], T]) -> T | None:
    """`ask(client)` of one backend, remembered for a while; None when it did not answer."""
    key = (backend, what)
    now = time.monotonic()
    with _lock:
        cached = _cache.get(key)
    if cached is not None and now - cached[0] < FLEET_INFO_TTL_SECONDS:
        return cached[1]
    try:
        value = ask(backend_client(backend, timeout=FLEET_INFO_TIMEOUT_SECONDS))
    except ComfyUIError as exc:
        logger.warning("front door: backend %s did not answer %s (%s)", backend, what, exc)
        value = None
    with _lock:
        _cache[key] = (now, value)
    return value


def fleet_info_forget() -> None:
    """Drop what was remembered (tests; after installing nodes on the fleet)."""
    with _lock:
        _cache.clear()


def fleet_object_info() -> dict[str, Any]:
    """Node class -> ComfyUI's description, for the classes every answering backend has and the
    server allows (WORKFLOW_NODE_CLASSES_ALLOWED / _DENIED)."""
    answers = [info for name in _backends() if (info := _asked(name, "object_info", _object_info)) is not None]
    if not answers:
        return {}
    common = set(answers[0]).intersection(*answers[1:])
    allowed = set(settings.WORKFLOW_NODE_CLASSES_ALLOWED)
    denied = set(settings.WORKFLOW_NODE_CLASSES_DENIED)
    return {
        name: spec
        for name, spec in answers[0].items()
        if name in common and name not in denied and (not allowed or name in allowed)
    }


def _object_info(client: ComfyUIClient) -> dict[str, Any]:
    return {name: spec for name, spec in client.object_info().items() if isinstance(spec, dict)}


def fleet_embeddings() -> list[str]:
    return _common_names("embeddings", lambda client: client.embeddings())


def fleet_model_folders() -> list[str]:
    return _common_names("models", lambda client: client.models())


def fleet_models(folder: str) -> list[str] | None:
    """The files of a model folder every answering backend has; None when no backend has the folder."""
    if folder not in fleet_model_folders():
        return None
    return _common_names(f"models/{folder}", lambda client: client.models(folder))


def _common_names(what: str, ask: Callable[[ComfyUIClient], list[str]]) -> list[str]:
    answers = [names for name in _backends() if (names := _asked(name, what, ask)) is not None]
    if not answers:
        return []
    common = set(answers[0]).intersection(*answers[1:])
    return [name for name in answers[0] if name in common]


def fleet_system_stats() -> dict[str, Any]:
    """ComfyUI's /system_stats for the fleet: one device per backend that answered, with its memory
    figures; nothing of a machine's operating system, paths or command line."""
    devices = []
    version = ""
    for index, name in enumerate(_backends()):
        stats = _asked(name, "system_stats", lambda client: client.system_stats())
        if not isinstance(stats, dict):
            continue
        system = stats.get("system")
        if isinstance(system, dict):
            version = version or _text(system.get("comfyui_version"))
        listed = stats.get("devices")
        for device in listed if isinstance(listed, list) else []:
            if isinstance(device, dict):
                devices.append(_device(name, index, device))
    return {
        "system": {
            "os": "fleet",
            "ram_total": 0,
            "ram_free": 0,
            "comfyui_version": version,
            "required_frontend_version": "",
            "python_version": "",
            "pytorch_version": "",
            "embedded_python": False,
            "argv": [],
        },
        "devices": devices,
    }


def _device(backend: str, index: int, device: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": f"{backend}: {_text(device.get('name'))}"[:200],
        "type": _text(device.get("type"))[:32],
        "index": index,
        **{key: _number(device.get(key)) for key in ("vram_total", "vram_free", "torch_vram_total", "torch_vram_free")},
    }


def _text(value: Any) -> str:
    return value[:200] if isinstance(value, str) else ""


def _number(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 2**63 else 0
