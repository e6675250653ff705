"""What a backend's node classes are called, how they are grouped, and which of them are outputs,
from /object_info.

Fetched once per backend and kept for a while: /object_info is large (megabytes on a studio
install, seconds to answer) and changes only when custom nodes are installed. Once old, the catalog
is still served while a thread fetches it again (jobs.refresh_ahead): a GPU worker asks for it as
it starts each job, and its next prompt should not wait for the fetch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import partial

from comfyui import ComfyUIClient, ComfyUIError
from jobs.refresh_ahead import refresh_in_background

logger = logging.getLogger(__name__)

CATALOG_TTL_SECONDS = 600.0


@dataclass(frozen=True)
class NodeCatalog:
    display_names: dict[str, str] = field(default_factory=dict)  # class_type -> display name
    categories: dict[str, str] = field(default_factory=dict)  # class_type -> category
    output_classes: set[str] = field(default_factory=set)


_catalogs: dict[str, tuple[float, NodeCatalog]] = {}


def node_catalog(backend: str, client: ComfyUIClient) -> NodeCatalog:
    """The backend's catalog; empty when the backend cannot say (names fall back to class names)."""
    cached = _catalogs.get(backend)
    if cached is not None:
        age = time.monotonic() - cached[0]
        if age >= CATALOG_TTL_SECONDS:
            refresh_in_background(("node catalog", backend), lambda: _catalog_fetch(backend, client.clone()))
        return cached[1]
    return _catalog_fetch(backend, client)


def catalog_read_ahead(backend: str, client: ComfyUIClient) -> None:
    """Have the refresher fetch the backend's catalog now, unless one is kept (a GPU worker that
    starts: its first job would fetch it on a free GPU's path). Returns at once."""
    if backend not in _catalogs:
        refresh_in_background(("node catalog", backend), partial(_catalog_fetch, backend, client))


def _catalog_fetch(backend: str, client: ComfyUIClient) -> NodeCatalog:
    try:
        info = client.object_info()
    except ComfyUIError as exc:
        logger.warning("backend %s: no /object_info (%s); showing class names", backend, exc)
        return NodeCatalog()
    specs = {cls: spec for cls, spec in info.items() if isinstance(spec, dict)}
    catalog = NodeCatalog(
        display_names={cls: str(spec.get("display_name") or cls) for cls, spec in specs.items()},
        categories={cls: str(spec.get("category") or "") for cls, spec in specs.items()},
        output_classes={cls for cls, spec in specs.items() if spec.get("output_node")},
    )
    _catalogs[backend] = (time.monotonic(), catalog)
    return catalog
