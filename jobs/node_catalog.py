"""What a backend's node classes are called and which of them are outputs, from /object_info.

Fetched once per backend and kept for a while: /object_info is large (megabytes on a studio
install) and changes only when custom nodes are installed.
"""

from __future__ import annotations

import logging
import time

from jobs.comfyui_client import ComfyUIClient, ComfyUIError

logger = logging.getLogger(__name__)

CATALOG_TTL_SECONDS = 600.0

_catalogs: dict[str, tuple[float, dict[str, str], set[str]]] = {}


def node_catalog(backend: str, client: ComfyUIClient) -> tuple[dict[str, str], set[str]]:
    """(class_type -> display name, output node classes); empty when the backend cannot say."""
    cached = _catalogs.get(backend)
    if cached is not None and time.monotonic() - cached[0] < CATALOG_TTL_SECONDS:
        return cached[1], cached[2]
    try:
        info = client.object_info()
    except ComfyUIError as exc:
        logger.warning("backend %s: no /object_info (%s); showing class names", backend, exc)
        return {}, set()
    names = {cls: str(spec.get("display_name") or cls) for cls, spec in info.items() if isinstance(spec, dict)}
    outputs = {cls for cls, spec in info.items() if isinstance(spec, dict) and spec.get("output_node")}
    _catalogs[backend] = (time.monotonic(), names, outputs)
    return names, outputs
