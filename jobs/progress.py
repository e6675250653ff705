"""A job's progress as ComfyUI reports it: pure state fed with websocket messages.

No I/O here, so the recorded traces can be replayed through it. Progress is what ComfyUI said
(node started, step value/max, node finished, cached nodes), never a guess from elapsed time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from comfyui import WsMessage
from comfyui.workflow import is_link


def top_level_id(node_id: str) -> str:
    # Nodes that expand into subgraphs run as "4.0.0.3"; the user's graph knows them as "4".
    return node_id.split(".", 1)[0]


def nodes_to_run(workflow: dict[str, Any], output_classes: set[str]) -> set[str]:
    """The nodes ComfyUI will execute: output nodes and everything they depend on.

    Without knowledge of which classes are outputs, every node counts.
    """
    outputs = {nid for nid, node in workflow.items() if node.get("class_type") in output_classes}
    if not outputs:
        return set(workflow)
    needed: set[str] = set()
    stack = list(outputs)
    while stack:
        nid = stack.pop()
        if nid in needed or nid not in workflow:
            continue
        needed.add(nid)
        for value in (workflow[nid].get("inputs") or {}).values():
            if is_link(value):
                stack.append(str(value[0]))
    return needed


@dataclass
class JobProgress:
    prompt_id: str
    workflow: dict[str, Any]
    display_names: dict[str, str] = field(default_factory=dict)  # class_type -> display name
    output_classes: set[str] = field(default_factory=set)
    categories: dict[str, str] = field(default_factory=dict)  # class_type -> category
    # Expected seconds per node (learned); nodes without one weigh as much as the average.
    weights: dict[str, float] = field(default_factory=dict)

    started: bool = False
    current_node: str | None = None
    step_value: float | None = None
    step_max: float | None = None
    done: set[str] = field(default_factory=set)
    cached: set[str] = field(default_factory=set)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    outcome: str | None = None  # "success" | "error" | "interrupted"
    error: dict[str, Any] = field(default_factory=dict)
    ended: bool = False  # ComfyUI sent `executing` with node null for our prompt
    fraction: float = 0.0
    # What happened to nodes since the tracker last looked: (kind, node id, data).
    happenings: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.to_run = nodes_to_run(self.workflow, self.output_classes)

    def complete(self, cached_nodes: list[str]) -> None:
        """ComfyUI says the prompt succeeded: every node that had to run ran, or came from cache."""
        self.cached |= {top_level_id(str(n)) for n in cached_nodes}
        self.done |= self.to_run - self.cached
        self.outcome = "success"
        self.fraction = 1.0

    def drain_happenings(self) -> list[tuple[str, str, dict[str, Any]]]:
        drained, self.happenings = self.happenings, []
        return drained

    # --- derived values -----------------------------------------------------------------------

    @property
    def current_class(self) -> str:
        if self.current_node is None:
            return ""
        return str(self.workflow.get(self.current_node, {}).get("class_type", ""))

    @property
    def current_name(self) -> str:
        if self.current_node is None:
            return ""
        node = self.workflow.get(self.current_node, {})
        title = (node.get("_meta") or {}).get("title")
        return str(title or self.display_names.get(self.current_class) or self.current_class)

    @property
    def current_category(self) -> str:
        return self.categories.get(self.current_class, "")

    def weight(self, node_id: str) -> float:
        known = [w for n, w in self.weights.items() if n in self.to_run and w > 0]
        default = sum(known) / len(known) if known else 1.0
        value = self.weights.get(node_id)
        return value if value and value > 0 else default

    @property
    def nodes_total(self) -> int:
        return len(self.to_run)

    @property
    def nodes_done(self) -> int:
        return len((self.done | self.cached) & self.to_run)

    def overall(self) -> float:
        """Finished nodes plus the current node's step fraction, each node weighted by its expected
        duration, over the nodes that must run.

        Cached nodes cost nothing, so they are left out of both sides. Never 1.0 before ComfyUI
        says the prompt succeeded; never lower than what was already reported.
        """
        if self.outcome == "success":
            return 1.0
        to_do = self.to_run - self.cached
        if not to_do:
            return self.fraction
        total = sum(self.weight(n) for n in to_do)
        finished = sum(self.weight(n) for n in self.done & to_do)
        current = 0.0
        node = self.current_node
        if node is not None and node in to_do and node not in self.done:
            current = self.weight(node) * self._step_fraction()
        value = min((finished + current) / total, 0.99)
        return max(self.fraction, value)

    def _step_fraction(self) -> float:
        """How far the current node is through its steps; 0 while it reports none."""
        if self.step_max is None or self.step_max <= 0 or self.step_value is None:
            return 0.0
        return min(max(self.step_value / self.step_max, 0.0), 1.0)

    # --- feeding ------------------------------------------------------------------------------

    def is_ours(self, message: WsMessage) -> bool:
        prompt_id = message.prompt_id
        if prompt_id is not None:
            return prompt_id == self.prompt_id
        # After a reconnect ComfyUI resends `executing` without prompt_id (reconnect.jsonl);
        # our socket's client id is ours alone, so a running prompt on it is ours.
        return message.type == "executing" and self.started and not self.ended

    def apply(self, message: WsMessage) -> bool:
        """Feed one message; True when the visible state changed."""
        if not self.is_ours(message):
            return False
        handler = getattr(self, f"_on_{message.type}", None)
        if handler is None:
            return False
        # Any message about our prompt means ComfyUI is executing it, even when we joined late
        # and never saw its `execution_start`.
        self.started = True
        changed = handler(message.data)
        self.fraction = self.overall()
        return bool(changed)

    def _mark_done(self, node_id: str) -> None:
        if node_id not in self.done and node_id not in self.cached:
            self.done.add(node_id)
            self.happenings.append(
                ("node_finished", node_id, {"steps": self.step_max if node_id == self.current_node else None})
            )

    def _start(self, node_id: str) -> None:
        self._finish_current()
        self.current_node = node_id
        self.happenings.append(("node_started", node_id, {}))

    def _finish_current(self) -> None:
        if self.current_node is not None:
            self._mark_done(self.current_node)
        self.step_value = None
        self.step_max = None

    def _on_execution_start(self, data: dict[str, Any]) -> bool:
        self.started = True
        return True

    def _on_execution_cached(self, data: dict[str, Any]) -> bool:
        self.started = True
        nodes = {top_level_id(str(n)) for n in data.get("nodes") or []}
        if nodes <= self.cached:
            return False
        self.happenings.append(("nodes_cached", "", {"nodes": sorted(nodes - self.cached)}))
        self.cached |= nodes
        return True

    def _on_executing(self, data: dict[str, Any]) -> bool:
        node = data.get("node")
        if node is None:
            self.ended = True
            self._finish_current()
            self.current_node = None
            return True
        self.started = True
        display = top_level_id(str(data.get("display_node") or node))
        if display == self.current_node:
            return False
        self._start(display)
        return True

    def _on_progress(self, data: dict[str, Any]) -> bool:
        node = data.get("node")
        if node is not None and top_level_id(str(node)) != self.current_node:
            # Progress names the running node even when we missed its `executing`.
            self._start(top_level_id(str(node)))
        value, maximum = data.get("value"), data.get("max")
        if not isinstance(value, (int, float)) or not isinstance(maximum, (int, float)):
            return False
        if (value, maximum) == (self.step_value, self.step_max):
            return False
        self.step_value, self.step_max = float(value), float(maximum)
        return True

    def _on_progress_state(self, data: dict[str, Any]) -> bool:
        changed = False
        for node_id, state in (data.get("nodes") or {}).items():
            if not isinstance(state, dict) or state.get("parent_node_id"):
                continue  # inner nodes of an expansion: their parent is what the user sees
            if state.get("state") == "finished" and node_id not in self.done and node_id not in self.cached:
                self._mark_done(str(node_id))
                changed = True
        return changed

    def _on_executed(self, data: dict[str, Any]) -> bool:
        node = data.get("display_node") or data.get("node")
        if node is None:
            return False
        node = top_level_id(str(node))
        if isinstance(data.get("output"), dict):
            self.outputs[node] = data["output"]
        self._mark_done(node)
        return True

    def _on_execution_success(self, data: dict[str, Any]) -> bool:
        self.outcome = "success"
        return True

    def _on_execution_error(self, data: dict[str, Any]) -> bool:
        self.outcome = "error"
        self.error = data
        return True

    def _on_execution_interrupted(self, data: dict[str, Any]) -> bool:
        self.outcome = "interrupted"
        self.error = data
        return True
