"""The workflow as a graph: well-formed nodes, node classes the administrator allows, links to nodes
that exist, numbers that are finite, and no cycles. Each problem names the node (and the input)."""

from __future__ import annotations

import math
import sys
from collections import deque
from collections.abc import Iterator
from typing import Any

from django.conf import settings

from comfyui.workflow import is_link

Workflow = dict[str, dict[str, Any]]

MAX_FLOAT = sys.float_info.max


def where(node_id: str, node: dict[str, Any]) -> str:
    return f"node {node_id} ({node['class_type']})"


def node_shape_problems(workflow: dict[Any, Any]) -> list[str]:
    problems = []
    for node_id, node in workflow.items():
        if not isinstance(node, dict):
            problems.append(f"node {node_id}: must be an object with 'class_type' and 'inputs'")
        elif not isinstance(node.get("class_type"), str) or not node["class_type"]:
            problems.append(f"node {node_id}: 'class_type' must be a non-empty string")
        elif not isinstance(node.get("inputs", {}), dict):
            problems.append(f"node {node_id} ({node['class_type']}): 'inputs' must be an object")
    return problems


def inputs_of(node: dict[str, Any]) -> dict[str, Any]:
    inputs: dict[str, Any] = node.get("inputs", {})
    return inputs


def links_of(node: dict[str, Any]) -> Iterator[tuple[str, str, int]]:
    """(input name, upstream node id, output index) of each linked input."""
    for name, value in inputs_of(node).items():
        if is_link(value):
            yield name, str(value[0]), value[1]


def class_problems(workflow: Workflow) -> list[str]:
    """Node classes refused by WORKFLOW_NODE_CLASSES_DENIED, or missing from a non-empty
    WORKFLOW_NODE_CLASSES_ALLOWED: a workflow is code, and some node classes run arbitrary code or
    write where they should not."""
    allowed = set(settings.WORKFLOW_NODE_CLASSES_ALLOWED)
    denied = set(settings.WORKFLOW_NODE_CLASSES_DENIED)
    refused: dict[str, list[str]] = {}
    for node_id, node in workflow.items():
        class_type = node["class_type"]
        if class_type in denied or (allowed and class_type not in allowed):
            refused.setdefault(class_type, []).append(node_id)
    return [
        f"node{'s' if len(ids) > 1 else ''} {', '.join(ids)} ({class_type}): the node class {class_type!r} is not "
        "allowed on this server"
        for class_type, ids in refused.items()
    ]


def link_problems(workflow: Workflow) -> list[str]:
    problems = []
    for node_id, node in workflow.items():
        for name, upstream, index in links_of(node):
            if upstream not in workflow:
                problems.append(f"{where(node_id, node)}: input '{name}' links to missing node {upstream}")
            elif upstream == node_id:
                problems.append(f"{where(node_id, node)}: input '{name}' links to the node itself")
            elif index < 0:
                problems.append(f"{where(node_id, node)}: input '{name}' links to output {index} of node {upstream}")
    return problems


def non_finite_problems(workflow: Workflow) -> list[str]:
    """NaN and infinity (JSON's `1e999`, or `NaN` that Python's parser accepts): ComfyUI cannot
    use them and PostgreSQL's jsonb cannot store them."""
    problems = []
    for node_id, node in workflow.items():
        for name, value in inputs_of(node).items():
            if _has_non_finite(value):
                problems.append(f"{where(node_id, node)}: input '{name}' is not a finite number")
        for key, value in node.items():
            if key != "inputs" and _has_non_finite(value):
                problems.append(f"{where(node_id, node)}: '{key}' holds a number that is not finite")
    return problems


def _has_non_finite(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return True
        if isinstance(item, int) and abs(item) > MAX_FLOAT:
            return True  # 10**400 is a valid JSON number, but no float (and no ComfyUI input) holds it
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return False


def links_resolve(workflow: Workflow) -> bool:
    return all(upstream in workflow for node in workflow.values() for _, upstream, _ in links_of(node))


def topological_order(workflow: Workflow) -> tuple[list[str], list[list[str]]]:
    """Node ids with every node after the nodes it links from, and the cycles that prevent it (each
    as the node ids around it). Links must point at existing nodes."""
    downstream: dict[str, list[str]] = {node_id: [] for node_id in workflow}
    waiting_on = dict.fromkeys(workflow, 0)
    for node_id, node in workflow.items():
        for _, upstream, _ in links_of(node):
            downstream[upstream].append(node_id)
            waiting_on[node_id] += 1
    ready = deque(node_id for node_id, count in waiting_on.items() if count == 0)
    order = []
    while ready:
        node_id = ready.popleft()
        order.append(node_id)
        for child in downstream[node_id]:
            waiting_on[child] -= 1
            if waiting_on[child] == 0:
                ready.append(child)
    stuck = {node_id for node_id, count in waiting_on.items() if count > 0}
    return order, _cycles(workflow, stuck)


def _cycles(workflow: Workflow, stuck: set[str]) -> list[list[str]]:
    """Every node left over from the ordering waits on another left-over node: walking upstream
    from one of them must come round to a node already walked."""
    cycles = []
    seen: set[str] = set()
    for start in sorted(stuck):
        if start in seen:
            continue
        path: list[str] = []
        position: dict[str, int] = {}
        node_id = start
        while node_id not in position and node_id not in seen:
            position[node_id] = len(path)
            path.append(node_id)
            node_id = next(up for _, up, _ in links_of(workflow[node_id]) if up in stuck)
        if node_id in position:
            cycles.append(path[position[node_id] :])
        seen.update(path)
    return cycles


def cycle_problems(cycles: list[list[str]], workflow: Workflow) -> list[str]:
    problems = []
    for cycle in cycles:
        if len(cycle) == 1:
            continue  # a node linked to itself is already reported by link_problems
        # Walked upstream: reverse it to read in the direction the data would flow.
        loop = [*reversed(cycle), cycle[-1]]
        names = " -> ".join(f"{node_id} ({workflow[node_id]['class_type']})" for node_id in loop)
        problems.append(f"nodes {names} form a cycle; ComfyUI runs only graphs without loops")
    return problems
