"""What each backend can run, from its /object_info: node classes and model files, kept in its row.

/object_info is megabytes on a studio install and changes only when nodes or models are installed:
the health probe reads it and stores it only when its hash changed, so a submit or a dispatch reads
one small row per backend instead of asking ComfyUI. What ComfyUI returns is untrusted: names are
bounded and counted before they are kept.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils import timezone

from fleet.models import Backend

# Files a loader node reads, as ComfyUI lists them in its combo inputs.
MODEL_FILE_EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".onnx")
MAX_NAMES = 50_000  # per backend, classes and files each: far above any real install
MAX_NAME_CHARS = 512


@dataclass(frozen=True)
class BackendFacts:
    """What routing knows of one configured backend."""

    name: str
    labels: frozenset[str]
    draining: bool
    reachable: bool | None  # None: never probed
    node_classes: frozenset[str] | None  # None: its /object_info is not known yet
    model_files: frozenset[str] | None

    @property
    def in_service(self) -> bool:
        # A backend never probed is given the benefit of the doubt: a fresh deployment must run jobs
        # before the first probe; one that answers nothing fails its jobs' attempts as unreachable.
        return not self.draining and self.reachable is not False


def backend_labels(name: str) -> frozenset[str]:
    return frozenset(settings.COMFYUI_BACKEND_LABELS.get(name, ()))


def catalog_from_object_info(info: Any) -> tuple[list[str], list[str]]:
    """(node classes, model files) of an /object_info answer, sorted and bounded."""
    if not isinstance(info, dict):
        return [], []
    classes = sorted(name for name in info if isinstance(name, str) and len(name) <= MAX_NAME_CHARS)[:MAX_NAMES]
    files: set[str] = set()
    for spec in info.values():
        if len(files) >= MAX_NAMES:
            break
        for options in _combo_options(spec):
            files.update(
                option
                for option in options
                if isinstance(option, str)
                and len(option) <= MAX_NAME_CHARS
                and option.lower().endswith(MODEL_FILE_EXTENSIONS)
            )
    return classes, sorted(files)[:MAX_NAMES]


def _combo_options(spec: Any) -> list[list[Any]]:
    """The option lists of a node's combo inputs: `"ckpt_name": [["a.safetensors", ...], {...}]`."""
    if not isinstance(spec, dict) or not isinstance(spec.get("input"), dict):
        return []
    found = []
    for group in ("required", "optional"):
        inputs = spec["input"].get(group)
        if not isinstance(inputs, dict):
            continue
        for value in inputs.values():
            if isinstance(value, list | tuple) and value and isinstance(value[0], list):
                found.append(value[0])
    return found


def backend_catalog_store(name: str, info: Any) -> bool:
    """Keep the backend's node classes and model files when its /object_info changed; True when it did."""
    classes, files = catalog_from_object_info(info)
    digest = hashlib.sha256(json.dumps([classes, files]).encode()).hexdigest()
    backend, _ = Backend.objects.get_or_create(name=name)
    backend_facts_forget()
    if backend.catalog_hash == digest:
        Backend.objects.filter(pk=backend.pk).update(catalog_at=timezone.now())  # read, unchanged
        return False
    Backend.objects.filter(pk=backend.pk).update(
        node_classes=classes, model_files=files, catalog_hash=digest, catalog_at=timezone.now()
    )
    return True


def backend_reachable_record(name: str, reachable: bool) -> None:
    backend_facts_forget()
    Backend.objects.update_or_create(name=name, defaults={"reachable": reachable, "checked_at": timezone.now()})


def backend_facts() -> list[BackendFacts]:
    """Every configured backend as routing sees it, in one query; kept for backend_facts_as_read
    (a submit and a take serve them as read lately: jobs.facts_served)."""
    now = time.monotonic()
    rows = {row.name: row for row in Backend.objects.filter(name__in=list(settings.COMFYUI_BACKENDS))}
    facts = [backend_facts_of(name, rows.get(name)) for name in settings.COMFYUI_BACKENDS]
    _recent[:] = [facts, now, dict(settings.COMFYUI_BACKENDS)]
    return facts


def backend_facts_as_read() -> tuple[list[BackendFacts], float] | None:
    """What backend_facts read last in this process and how many seconds ago; None when it read
    nothing yet, or for other backends than are configured now."""
    facts, read_at, configured = _recent
    if facts is None or configured != settings.COMFYUI_BACKENDS:
        return None
    return facts, time.monotonic() - read_at


# What backend_facts read last in this process: (facts, when, for which configured backends).
_recent: list[Any] = [None, 0.0, None]


def backend_facts_forget() -> None:
    """This process changed a backend's row (or a test rolled one back): read them again."""
    _recent[:] = [None, 0.0, None]


def backend_facts_one(name: str) -> BackendFacts:
    return backend_facts_of(name, Backend.objects.filter(name=name).first())


def backend_facts_of(name: str, row: Backend | None) -> BackendFacts:
    """A configured backend's facts from its row as the caller read it (None: no row yet)."""
    known = row is not None and bool(row.catalog_hash)
    return BackendFacts(
        name=name,
        labels=backend_labels(name),
        draining=bool(row and row.draining),
        reachable=row.reachable if row else None,
        node_classes=frozenset(row.node_classes) if known and row else None,
        model_files=frozenset(row.model_files) if known and row else None,
    )
