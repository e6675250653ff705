"""The prompt graph during execution: ComfyUI's DynamicPrompt, ExecutionList and GraphBuilder.

The order in which ComfyUI runs nodes is observable (it is the order of `executing` messages), so
this follows comfy_execution/graph.py closely: a depth-first pending list, block counts, and the
"UX friendly" pick that prefers output and async nodes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol


class NodeKind(Protocol):
    """What the execution order needs of a node class (nodes.Node has both as class attributes)."""

    @property
    def OUTPUT_NODE(self) -> bool: ...

    @property
    def IS_ASYNC(self) -> bool: ...


class NodeKinds(Protocol):
    """A node class by its class_type: node_registry.NodeRegistry, named by its shape so this module
    does not import the registry, which imports the nodes, which import this module."""

    def __getitem__(self, class_type: str, /) -> NodeKind: ...


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


class DynamicPrompt:
    """The submitted prompt plus the nodes added by expansion (ids like "4.0.0.3")."""

    def __init__(self, original_prompt: dict[str, Any]) -> None:
        self.original_prompt = original_prompt
        self._ephemeral: dict[str, dict[str, Any]] = {}
        self._parents: dict[str, str] = {}
        self._display: dict[str, str] = {}

    def get_node(self, node_id: str) -> dict[str, Any]:
        if node_id in self._ephemeral:
            return self._ephemeral[node_id]
        return self.original_prompt[node_id]

    def has_node(self, node_id: str) -> bool:
        return node_id in self.original_prompt or node_id in self._ephemeral

    def add_ephemeral_node(self, node_id: str, node: dict[str, Any], parent_id: str, display_id: str) -> None:
        self._ephemeral[node_id] = node
        self._parents[node_id] = parent_id
        self._display[node_id] = display_id

    def get_real_node_id(self, node_id: str) -> str:
        while node_id in self._parents:
            node_id = self._parents[node_id]
        return node_id

    def get_parent_node_id(self, node_id: str) -> str | None:
        return self._parents.get(node_id)

    def get_display_node_id(self, node_id: str) -> str:
        while node_id in self._display:
            node_id = self._display[node_id]
        return node_id


class ExecutionList:
    """Nodes still to run and what blocks them; `is_cached` decides which inputs need running."""

    def __init__(self, dynprompt: DynamicPrompt, registry: NodeKinds, is_cached: Callable[[str], bool]) -> None:
        self.dynprompt = dynprompt
        self.registry = registry
        self.is_cached = is_cached
        self.pending: dict[str, bool] = {}
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, dict[int, bool]]] = {}
        self.staged_node_id: str | None = None
        self._external_blocks = 0
        self._unblocked = asyncio.Event()

    def add_node(self, node_id: str) -> None:
        stack = [node_id]
        links: list[tuple[str, int, str]] = []
        while stack:
            unique_id = stack.pop()
            if unique_id in self.pending:
                continue
            self.pending[unique_id] = True
            self.block_count[unique_id] = 0
            self.blocking[unique_id] = {}
            for value in self.dynprompt.get_node(unique_id)["inputs"].values():
                if is_link(value):
                    from_node_id, from_socket = value
                    if not self.is_cached(from_node_id):
                        stack.append(from_node_id)
                    links.append((from_node_id, from_socket, unique_id))
        for link in links:
            self.add_strong_link(*link)

    def add_strong_link(self, from_node_id: str, from_socket: int, to_node_id: str) -> None:
        if self.is_cached(from_node_id):
            return
        self.add_node(from_node_id)
        if to_node_id not in self.blocking[from_node_id]:
            self.blocking[from_node_id][to_node_id] = {}
            self.block_count[to_node_id] += 1
        self.blocking[from_node_id][to_node_id][from_socket] = True

    def add_external_block(self, node_id: str) -> Callable[[], None]:
        """Block a node until an async task of it finishes; returns the unblock function."""
        self._external_blocks += 1
        self.block_count[node_id] += 1

        def unblock() -> None:
            self._external_blocks -= 1
            self.block_count[node_id] -= 1
            self._unblocked.set()

        return unblock

    def is_empty(self) -> bool:
        return not self.pending

    async def stage_node_execution(self) -> str:
        assert self.staged_node_id is None
        available = self._ready_nodes()
        while not available and self._external_blocks > 0:
            await self._unblocked.wait()
            self._unblocked.clear()
            available = self._ready_nodes()
        if not available:
            raise RuntimeError("Dependency cycle detected")
        self.staged_node_id = self._ux_friendly_pick(available)
        return self.staged_node_id

    def unstage_node_execution(self) -> None:
        self.staged_node_id = None

    def complete_node_execution(self) -> None:
        node_id = self.staged_node_id
        assert node_id is not None
        del self.pending[node_id]
        for blocked_node_id in self.blocking[node_id]:
            self.block_count[blocked_node_id] -= 1
        del self.blocking[node_id]
        self.staged_node_id = None

    def _ready_nodes(self) -> list[str]:
        return [node_id for node_id in self.pending if self.block_count[node_id] == 0]

    def _ux_friendly_pick(self, node_list: list[str]) -> str:
        # ComfyUI runs output and async nodes first so results show (and async work starts) early.
        for node_id in node_list:
            if self._is_output(node_id) or self._is_async(node_id):
                return node_id
        for node_id in node_list:
            if any(self._is_output(blocked) for blocked in self.blocking[node_id]):
                return node_id
        for node_id in node_list:
            for blocked in self.blocking[node_id]:
                if any(self._is_output(b) for b in self.blocking.get(blocked, {})):
                    return node_id
        return node_list[0]

    def _is_output(self, node_id: str) -> bool:
        return self.registry[self.dynprompt.get_node(node_id)["class_type"]].OUTPUT_NODE

    def _is_async(self, node_id: str) -> bool:
        return self.registry[self.dynprompt.get_node(node_id)["class_type"]].IS_ASYNC


class GraphBuilder:
    """Builds the subgraph a node expands into; ids are "<node>.<call>.<graph>.<n>" as in ComfyUI."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: dict[str, dict[str, Any]] = {}
        self._next_id = 1

    def node(self, class_type: str, **inputs: Any) -> str:
        node_id = f"{self.prefix}{self._next_id}"
        self._next_id += 1
        self.nodes[node_id] = {"class_type": class_type, "inputs": dict(inputs)}
        return node_id

    @staticmethod
    def out(node_id: str, index: int = 0) -> list[Any]:
        return [node_id, index]

    def finalize(self) -> dict[str, dict[str, Any]]:
        return self.nodes
