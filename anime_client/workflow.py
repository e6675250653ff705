"""Workflows on the client side: read a file, refuse ComfyUI's UI format before any request, and
point loader inputs at uploaded assets (`--input 12=keyframe.png`, `--input 12.image=keyframe.png`).

Everything here is checked before the first request: a typo in a node id must not leave uploaded
assets and no job behind.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anime_client.errors import WorkflowError

# Inputs that hold a file name in ComfyUI's loaders (LoadImage, LoadImageMask, LoadAudio, LoadVideo,
# VHS_LoadVideo): preferred when a node has several string inputs that look like file names.
LOADER_INPUT_NAMES = ("image", "video", "audio", "mask", "file")
# "keyframe.png", "clips/shot 12.mp4", "x.png [input]" (ComfyUI's annotated names), "asset:42".
_FILE_NAME = re.compile(r"^[^\n]{0,250}\.[A-Za-z0-9]{1,12}( \[(input|output|temp)\])?$")
EXPORT_API_HINT = (
    'export the API format instead: in ComfyUI, Workflow > Export (API) (older versions: "Save (API)", '
    "shown once the dev mode option is on) and submit that file"
)


@dataclass(frozen=True)
class InputBinding:
    """One loader input of the workflow, to be set to an uploaded file's asset reference."""

    node_id: str
    input_name: str
    path: Path


def load_workflow(path: Path) -> dict[str, Any]:
    """A workflow file in ComfyUI's API format; anything else is a WorkflowError saying why."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowError(f"cannot read the workflow {path}: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkflowError(f"{path} is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from exc
    return checked_api_format(data, str(path))


def checked_api_format(data: Any, name: str = "the workflow") -> dict[str, Any]:
    """`data` if it is an API-format workflow ({node id: {"class_type", "inputs"}}); a WorkflowError
    naming the problem otherwise, the UI format with the way to export the right one."""
    if isinstance(data, Mapping) and isinstance(data.get("nodes"), list) and "links" in data:
        raise WorkflowError(f"{name} is in ComfyUI's UI format (top-level nodes and links); {EXPORT_API_HINT}")
    if isinstance(data, Mapping) and isinstance(data.get("prompt"), Mapping) and "class_type" not in data["prompt"]:
        raise WorkflowError(f'{name} is a /prompt request body; submit the object under its "prompt" key')
    if not isinstance(data, Mapping) or not data:
        raise WorkflowError(f"{name} is not a workflow in ComfyUI's API format (an object of nodes); {EXPORT_API_HINT}")
    for node_id, node in data.items():
        if not isinstance(node, Mapping) or not isinstance(node.get("class_type"), str):
            raise WorkflowError(
                f"{name}: node {node_id!r} has no class_type, so this is not ComfyUI's API format; {EXPORT_API_HINT}"
            )
    return dict(data)


def parse_input_flag(
    flag: str, expected: str = "NODE=FILE or NODE.INPUT=FILE, e.g. 12=keyframe.png"
) -> tuple[str, Path]:
    """`--input NODE=FILE` or `--input NODE.INPUT=FILE` as (target, file); a template's
    `--input NAME=FILE` the same way, with its own `expected` shape."""
    target, sep, file = flag.partition("=")
    if not sep or not target.strip() or not file.strip():
        raise WorkflowError(f"--input {flag!r}: expected {expected}")
    return target.strip(), Path(file.strip()).expanduser()


def input_bindings(workflow: Mapping[str, Any], inputs: Mapping[str, Path | str]) -> list[InputBinding]:
    """Which loader input each file goes to: {"12": file} picks node 12's file-name input,
    {"12.image": file} names it. Every target and file is checked here."""
    bindings = []
    for target, file in inputs.items():
        node_id, input_name = _target(workflow, target)
        path = Path(file)
        if not path.is_file():
            raise WorkflowError(f"--input {target}={file}: no such file")
        bindings.append(InputBinding(node_id, input_name, path))
    seen: dict[tuple[str, str], Path] = {}
    for binding in bindings:
        key = (binding.node_id, binding.input_name)
        if key in seen:
            raise WorkflowError(f"node {binding.node_id} input {binding.input_name!r} is given two files")
        seen[key] = binding.path
    return bindings


def with_references(workflow: Mapping[str, Any], references: Iterable[tuple[InputBinding, str]]) -> dict[str, Any]:
    """A copy of the workflow with each binding's input set to its asset reference ("asset:<id>")."""
    result = copy.deepcopy(dict(workflow))
    for binding, reference in references:
        result[binding.node_id]["inputs"][binding.input_name] = reference
    return result


def _target(workflow: Mapping[str, Any], target: str) -> tuple[str, str]:
    if target in workflow:
        return target, _loader_input(target, workflow[target])
    node_id, dot, input_name = target.rpartition(".")
    if not dot or node_id not in workflow:
        known = ", ".join(sorted(workflow, key=_node_order)[:20])
        raise WorkflowError(f"--input {target}: node {node_id or target!r} is not in the workflow (its nodes: {known})")
    inputs = workflow[node_id].get("inputs") or {}
    if input_name not in inputs:
        raise WorkflowError(
            f"--input {target}: node {node_id} ({workflow[node_id]['class_type']}) has no input {input_name!r}; "
            f"its inputs: {', '.join(inputs) or 'none'}"
        )
    value = inputs[input_name]
    if not isinstance(value, str):
        raise WorkflowError(f"--input {target}: node {node_id}'s input {input_name!r} is not a file name ({value!r})")
    return node_id, input_name


def _loader_input(node_id: str, node: Mapping[str, Any]) -> str:
    """The input of a loader node whose current value is a file name."""
    inputs = node.get("inputs") or {}
    names = [name for name, value in inputs.items() if isinstance(value, str) and _is_file_name(value)]
    if len(names) > 1:
        names = [name for name in names if name in LOADER_INPUT_NAMES] or names
    if len(names) == 1:
        return names[0]
    class_type = node.get("class_type")
    if not names:
        raise WorkflowError(
            f"--input {node_id}: node {node_id} ({class_type}) has no input holding a file name; "
            f"name one: --input {node_id}.INPUT=FILE"
        )
    raise WorkflowError(
        f"--input {node_id}: node {node_id} ({class_type}) has several file-name inputs ({', '.join(names)}); "
        f"name one: --input {node_id}.{names[0]}=FILE"
    )


def _is_file_name(value: str) -> bool:
    return value.startswith("asset:") or bool(_FILE_NAME.match(value))


def _node_order(node_id: str) -> tuple[int, str]:
    return (int(node_id), "") if node_id.isdigit() else (1 << 62, node_id)
