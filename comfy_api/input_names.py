"""File names in a prompt's loader inputs (LoadImage's `image`, ...) that the caller uploaded through
POST /upload/image become references to the caller's assets ("asset:<id>"), which the GPU worker
places into its ComfyUI's input folder (jobs.tracking.inputs). What the client wrote is kept, so the
prompt shows as it was sent."""

from __future__ import annotations

import copy
import re
from typing import Any

from django.db.models import Q

from assets.references import ASSET_PREFIX, LOADER_KINDS, OUTPUT_PREFIX
from comfy_api.models import FrontDoorInput

# ComfyUI's folder annotation ("x.png [input]"): only the input folder holds uploads.
_INPUT_ANNOTATION = re.compile(r" \[input\]$")

InputNames = dict[str, dict[str, str]]


def split_name(value: str) -> tuple[str, str]:
    """("subfolder", "name") of a loader's value, as ComfyUI reads "sub/x.png [input]"."""
    value = _INPUT_ANNOTATION.sub("", value)
    subfolder, _, name = value.rpartition("/")
    return subfolder, name


def _candidates(prompt: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(node id, input name, value) of each loader input holding a plain file name."""
    found = []
    for node_id, node in prompt.items():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict):
            continue
        for input_name, value in inputs.items():
            class_type = node.get("class_type")
            if (
                isinstance(class_type, str)  # anything else is prompt_checks' to refuse (unhashable here)
                and (class_type, input_name) in LOADER_KINDS
                and isinstance(value, str)
                and not value.startswith((ASSET_PREFIX, OUTPUT_PREFIX))
            ):
                found.append((str(node_id), str(input_name), value))
    return found


def uploaded_names_resolved(prompt: dict[str, Any], user: Any) -> tuple[dict[str, Any], InputNames]:
    """The prompt with the caller's uploaded names as asset references, and what each such input held.
    A name the caller never uploaded is left as it is (the job's own checks judge it)."""
    candidates = _candidates(prompt)
    if not candidates:
        return prompt, {}
    wanted = {split_name(value) for _, _, value in candidates}
    match = Q()
    for subfolder, name in wanted:
        match |= Q(subfolder=subfolder, name=name)
    assets = {
        (row.subfolder, row.name): row.asset_id
        for row in FrontDoorInput.objects.filter(match, user=user).only("subfolder", "name", "asset_id")
    }
    workflow = copy.deepcopy(prompt)
    names: InputNames = {}
    for node_id, input_name, value in candidates:
        asset_id = assets.get(split_name(value))
        if asset_id is not None:
            workflow[node_id]["inputs"][input_name] = f"{ASSET_PREFIX}{asset_id}"
            names.setdefault(node_id, {})[input_name] = value
    return workflow, names


def prompt_as_sent(workflow: dict[str, Any], names: InputNames) -> dict[str, Any]:
    """The job's workflow with the names the client wrote in place of the asset references."""
    if not names:
        return workflow
    shown = dict(workflow)
    for node_id, inputs in names.items():
        node = shown.get(node_id)
        if isinstance(node, dict) and isinstance(node.get("inputs"), dict):
            shown[node_id] = {**node, "inputs": {**node["inputs"], **inputs}}
    return shown
