"""ComfyUI's default ("classic") output cache.

A node's outputs are stored under its input signature: its class, its literal inputs and, for
linked inputs, the signatures of its ancestors (plus its own id when it takes UNIQUE_ID or is not
idempotent). Before each prompt the cache keeps only entries whose keys the new prompt uses, so
re-running the last prompt is served from cache while A, B, A re-runs A.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .graph import DynamicPrompt, is_link
from .node_registry import NodeRegistry


@dataclass
class CacheEntry:
    outputs: list[list[Any]]
    ui: dict[str, Any] | None


class OutputCache:
    def __init__(self, registry: NodeRegistry) -> None:
        self.registry = registry
        self._entries: dict[str, CacheEntry] = {}
        self._keys: dict[str, str] = {}

    def set_prompt(self, dynprompt: DynamicPrompt) -> None:
        prompt = dynprompt.original_prompt
        self._keys = {node_id: self._signature(prompt, node_id) for node_id in prompt}
        used = set(self._keys.values())
        self._entries = {key: entry for key, entry in self._entries.items() if key in used}

    def all_node_ids(self) -> list[str]:
        return list(self._keys)

    def get(self, node_id: str) -> CacheEntry | None:
        key = self._keys.get(node_id)
        return None if key is None else self._entries.get(key)

    def set(self, node_id: str, entry: CacheEntry) -> None:
        # Nodes created by expansion have no key: ComfyUI keeps them in per-parent subcaches,
        # which only matter when the parent itself is not cached; the simulator skips that.
        key = self._keys.get(node_id)
        if key is not None:
            self._entries[key] = entry

    def _signature(self, prompt: dict[str, Any], node_id: str) -> str:
        ancestors = self._ordered_ancestry(prompt, node_id)
        order = {ancestor: index for index, ancestor in enumerate(ancestors)}
        parts = [self._immediate_signature(prompt, node_id, order)]
        parts += [self._immediate_signature(prompt, ancestor, order) for ancestor in ancestors]
        return json.dumps(parts, sort_keys=True, default=str)

    def _ordered_ancestry(self, prompt: dict[str, Any], node_id: str) -> list[str]:
        ancestors: list[str] = []
        stack = [node_id]
        while stack:
            current = stack.pop()
            for key in sorted(prompt[current]["inputs"]):
                value = prompt[current]["inputs"][key]
                if is_link(value) and value[0] not in ancestors and value[0] in prompt:
                    ancestors.append(value[0])
                    stack.append(value[0])
        return ancestors

    def _immediate_signature(self, prompt: dict[str, Any], node_id: str, order: dict[str, int]) -> list[Any]:
        node = prompt[node_id]
        cls = self.registry[node["class_type"]]
        signature: list[Any] = [node["class_type"]]
        hidden = cls.input_types(self.registry.options).get("hidden", {})
        if cls.NOT_IDEMPOTENT or "UNIQUE_ID" in hidden.values():
            signature.append(node_id)
        for key in sorted(node["inputs"]):
            value = node["inputs"][key]
            if is_link(value):
                signature.append([key, "ANCESTOR", order.get(value[0]), value[1]])
            else:
                signature.append([key, value])
        return signature
