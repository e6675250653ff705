"""What a backend's node classes are called, how they are grouped, and which of them are outputs,
from /object_info.

Fetched once per backend and kept for a while: /object_info is large (megabytes on a studio
install) and changes only when custom nodes are installed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from comfyui import ComfyUIClient, ComfyUIError

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
    if cached is not None and time.monotonic() - cached[0] < CATALOG_TTL_SECONDS:
        return cached[1]
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
