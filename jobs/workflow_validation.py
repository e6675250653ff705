"""Checks on a submitted workflow before it may reach a GPU.

A workflow is code: it can name any node class and ask for any cost (docs/HAZARDS.md). It must be a
ComfyUI API-format graph of bounded size, whose links point at nodes that exist, and whose cost
inputs (steps, resolution, frames, batch) stay inside the configured bounds.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings

from comfyui.workflow import is_link

FRAME_INPUTS = ("frames", "length", "video_frames", "num_frames", "frame_count")
BATCH_INPUTS = ("batch_size", "amount")


def workflow_problems(workflow: Any) -> list[str]:
    """Every reason the workflow cannot be accepted; empty when it is fine."""
    if not isinstance(workflow, dict) or not workflow:
        return ["workflow must be a non-empty object mapping node ids to nodes (ComfyUI API format)"]
    if "nodes" in workflow and "links" in workflow:
        return [
            "this is a UI-format workflow (it has 'nodes' and 'links'); export it from ComfyUI with "
            "'Export (API)' / 'Save (API Format)'"
        ]
    size = len(json.dumps(workflow))
    if size > settings.WORKFLOW_MAX_BYTES:
        return [f"workflow is {size} bytes; the limit is {settings.WORKFLOW_MAX_BYTES}"]
    if len(workflow) > settings.WORKFLOW_MAX_NODES:
        return [f"workflow has {len(workflow)} nodes; the limit is {settings.WORKFLOW_MAX_NODES}"]
    problems: list[str] = []
    for node_id, node in workflow.items():
        problems.extend(_node_problems(str(node_id), node, workflow))
    return problems


def _node_problems(node_id: str, node: Any, workflow: dict[str, Any]) -> list[str]:
    if not isinstance(node, dict):
        return [f"node {node_id}: must be an object with 'class_type' and 'inputs'"]
    class_type = node.get("class_type")
    if not isinstance(class_type, str) or not class_type:
        return [f"node {node_id}: 'class_type' must be a non-empty string"]
    inputs = node.get("inputs", {})
    if not isinstance(inputs, dict):
        return [f"node {node_id} ({class_type}): 'inputs' must be an object"]
    problems = []
    for name, value in inputs.items():
        if is_link(value) and str(value[0]) not in workflow:
            problems.append(f"node {node_id} ({class_type}): input '{name}' links to missing node {value[0]}")
    problems.extend(_cost_problems(node_id, class_type, inputs))
    return problems


def _number(inputs: dict[str, Any], name: str) -> float | None:
    value = inputs.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _cost_problems(node_id: str, class_type: str, inputs: dict[str, Any]) -> list[str]:
    where = f"node {node_id} ({class_type})"
    problems = []
    steps = _number(inputs, "steps")
    if steps is not None and steps > settings.WORKFLOW_MAX_STEPS:
        problems.append(f"{where}: steps {steps:g} exceeds the limit of {settings.WORKFLOW_MAX_STEPS}")
    width, height = _number(inputs, "width"), _number(inputs, "height")
    if width is not None and height is not None and width * height > settings.WORKFLOW_MAX_PIXELS:
        problems.append(f"{where}: {width:g}x{height:g} exceeds the limit of {settings.WORKFLOW_MAX_PIXELS} pixels")
    for name in FRAME_INPUTS:
        frames = _number(inputs, name)
        if frames is not None and frames > settings.WORKFLOW_MAX_FRAMES:
            problems.append(f"{where}: {name} {frames:g} exceeds the limit of {settings.WORKFLOW_MAX_FRAMES}")
    for name in BATCH_INPUTS:
        batch = _number(inputs, name)
        if batch is not None and batch > settings.WORKFLOW_MAX_BATCH:
            problems.append(f"{where}: {name} {batch:g} exceeds the limit of {settings.WORKFLOW_MAX_BATCH}")
    return problems
