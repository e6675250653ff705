"""Checks on a submitted workflow before it may reach a GPU.

A workflow is code: it can name any node class and ask for any cost (docs/HAZARDS.md). It must be a
ComfyUI API-format graph of bounded size, made of node classes this server allows, whose links point
at nodes that exist without forming a loop, whose numbers are finite, and whose cost (steps,
resolution, frames, batch), followed along the graph as ComfyUI will compute it, stays inside the
configured bounds (cost.py). Every problem names the node, and the input where there is one.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings

from jobs.workflow_validation.cost import BATCH_INPUTS, FRAME_INPUTS, cost_problems
from jobs.workflow_validation.graph import (
    class_problems,
    cycle_problems,
    link_problems,
    links_resolve,
    node_shape_problems,
    non_finite_problems,
    topological_order,
)

__all__ = ["BATCH_INPUTS", "FRAME_INPUTS", "workflow_problems"]


def workflow_problems(workflow: Any) -> list[str]:
    """Every reason the workflow cannot be accepted; empty when it is fine."""
    if not isinstance(workflow, dict) or not workflow:
        return ["workflow must be a non-empty object mapping node ids to nodes (ComfyUI API format)"]
    if "nodes" in workflow and "links" in workflow:
        return [
            "this is a UI-format workflow (it has 'nodes' and 'links'); export it from ComfyUI with "
            "'Export (API)' / 'Save (API Format)'"
        ]
    if len(workflow) > settings.WORKFLOW_MAX_NODES:
        return [f"workflow has {len(workflow)} nodes; the limit is {settings.WORKFLOW_MAX_NODES}"]
    try:
        size = len(json.dumps(workflow, allow_nan=False))
    except ValueError:
        size = 0  # NaN or infinity somewhere: named node by node below
    if size > settings.WORKFLOW_MAX_BYTES:
        return [f"workflow is {size} bytes; the limit is {settings.WORKFLOW_MAX_BYTES}"]
    problems = node_shape_problems(workflow)
    if problems:
        return problems
    graph = {str(node_id): node for node_id, node in workflow.items()}
    problems = link_problems(graph) + non_finite_problems(graph)
    order, cycles = topological_order(graph) if links_resolve(graph) else ([], [])
    problems += cycle_problems(cycles, graph)
    problems += class_problems(graph)
    if problems:
        return problems
    return cost_problems(graph, order)
