"""Node progress as ComfyUI 0.8 reports it.

Every change to any node's progress sends `progress_state` with the WHOLE per-node map of the
prompt (all non-pending nodes), and each ProgressBar update additionally sends the legacy
`progress` message and, with a preview, a binary frame (type 4 before `progress` for clients that
negotiated supports_preview_metadata, type 1 after it for the others).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .graph import DynamicPrompt
from .sockets import BinaryEventType, SocketHub


class NodeState(Enum):
    PENDING = "pending"
    RUNNING = "running"
    FINISHED = "finished"
    ERROR = "error"


@dataclass(frozen=True)
class Preview:
    """An encoded preview image, e.g. ("JPEG", bytes)."""

    image_format: str
    data: bytes

    @property
    def mimetype(self) -> str:
        return "image/png" if self.image_format == "PNG" else "image/jpeg"

    @property
    def type_number(self) -> int:
        return 2 if self.image_format == "PNG" else 1


@dataclass
class _NodeProgress:
    state: NodeState
    value: float
    max: float


class ProgressRegistry:
    """The per-prompt progress map (comfy_execution/progress.py) wired to the websocket."""

    def __init__(self, prompt_id: str, dynprompt: DynamicPrompt, hub: SocketHub) -> None:
        self.prompt_id = prompt_id
        self.dynprompt = dynprompt
        self.hub = hub
        self.nodes: dict[str, _NodeProgress] = {}

    def _entry(self, node_id: str) -> _NodeProgress:
        # ints on purpose: a cached node finished from a fresh entry reports value/max 1, not 1.0.
        return self.nodes.setdefault(node_id, _NodeProgress(NodeState.PENDING, 0, 1))

    def start_progress(self, node_id: str) -> None:
        entry = self._entry(node_id)
        entry.state, entry.value, entry.max = NodeState.RUNNING, 0.0, 1.0
        self._send_state()

    def update_progress(self, node_id: str, value: float, max_value: float, preview: Preview | None) -> None:
        entry = self._entry(node_id)
        entry.state, entry.value, entry.max = NodeState.RUNNING, value, max_value
        self._send_state()
        if preview is not None and self.hub.supports_preview_metadata(self.hub.client_id):
            metadata = self._node_ids(node_id)
            metadata["image_type"] = preview.mimetype
            encoded = json.dumps(metadata).encode()
            payload = struct.pack(">I", len(encoded)) + encoded + preview.data
            self.hub.send_sync(BinaryEventType.PREVIEW_IMAGE_WITH_METADATA, payload, self.hub.client_id)

    def finish_progress(self, node_id: str) -> None:
        entry = self._entry(node_id)
        entry.state, entry.value = NodeState.FINISHED, entry.max
        self._send_state()

    def _node_ids(self, node_id: str) -> dict[str, Any]:
        return {
            "node_id": node_id,
            "prompt_id": self.prompt_id,
            "display_node_id": self.dynprompt.get_display_node_id(node_id),
            "parent_node_id": self.dynprompt.get_parent_node_id(node_id),
            "real_node_id": self.dynprompt.get_real_node_id(node_id),
        }

    def _send_state(self) -> None:
        nodes = {}
        for node_id, entry in self.nodes.items():
            if entry.state is NodeState.PENDING:
                continue
            ids = self._node_ids(node_id)
            nodes[node_id] = {
                "value": entry.value,
                "max": entry.max,
                "state": entry.state.value,
                "node_id": ids["node_id"],
                "prompt_id": ids["prompt_id"],
                "display_node_id": ids["display_node_id"],
                "parent_node_id": ids["parent_node_id"],
                "real_node_id": ids["real_node_id"],
            }
        self.hub.send_sync("progress_state", {"prompt_id": self.prompt_id, "nodes": nodes}, self.hub.client_id)


ProgressHook = Callable[[float, float, "Preview | None", str], None]


class ProgressBar:
    """comfy.utils.ProgressBar: values are clamped to the total, each update goes through the hook."""

    def __init__(self, total: float, node_id: str, hook: ProgressHook) -> None:
        self.total = total
        self.current: float = 0
        self.node_id = node_id
        self._hook = hook

    def update_absolute(self, value: float, total: float | None = None, preview: Preview | None = None) -> None:
        if total is not None:
            self.total = total
        value = min(value, self.total)
        self.current = value
        self._hook(self.current, self.total, preview, self.node_id)

    def update(self, value: float) -> None:
        self.update_absolute(self.current + value)
