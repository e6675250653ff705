"""POST /prompt's checks, answered as ComfyUI answers them (the traces' validation_error.jsonl).

ComfyUI's own checks, against the fleet's /object_info (comfy_api.fleet_info): every node's class
exists, the prompt has an output node, required inputs are given, a choice input holds one of its
choices. Then the project's own (the size, cost, node-class and reference rules every job passes,
jobs.workflow_validation and the asset and output reference checks), each problem under the node it
names. When no backend answers /object_info, ComfyUI's checks are left to the GPU machine's ComfyUI
(its refusal fails the job as `validation`), and the output nodes are the nodes nothing reads from.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from assets.references import ASSET_PREFIX, LOADER_KINDS, OUTPUT_PREFIX
from assets.selectors import asset_reference_problems
from comfy_api.errors import comfy_error
from comfyui.workflow import is_link
from jobs.dependencies import output_reference_problems
from jobs.workflow_validation import workflow_problems

# "node 12 (KSampler): ..." / "nodes 3, 4 (X): ..." / "node 12: ...": the node a project check names.
_NODE_PROBLEM = re.compile(r"^nodes? ([^\s(:,]+)")


@dataclass
class PromptVerdict:
    """The 400 body's parts when refused; the output nodes when accepted."""

    error: dict[str, Any] | None = None
    node_errors: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)


def prompt_verdict(prompt: Any, workflow: Any, user: Any, object_info: dict[str, Any]) -> PromptVerdict:
    """`prompt` is what the client sent; `workflow` is it with uploaded names as asset references."""
    if not isinstance(prompt, dict):
        return PromptVerdict(comfy_error("invalid_prompt", "The prompt must be an object of node id -> node."))
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            return PromptVerdict(
                comfy_error(
                    "invalid_prompt",
                    "Cannot execute because a node is missing the class_type property.",
                    f"Node ID '#{node_id}'",
                )
            )
        if object_info and node["class_type"] not in object_info:
            return PromptVerdict(
                comfy_error(
                    "invalid_prompt",
                    f"Cannot execute because node {node['class_type']} does not exist.",
                    f"Node ID '#{node_id}'",
                )
            )
    outputs = output_nodes(prompt, object_info)
    if not outputs:
        return PromptVerdict(comfy_error("prompt_no_outputs", "Prompt has no outputs"))
    node_errors = _node_errors(prompt, object_info, outputs)
    if not node_errors:
        node_errors = _project_errors(prompt, workflow, user, outputs)
    if node_errors:
        return PromptVerdict(
            comfy_error("prompt_outputs_failed_validation", "Prompt outputs failed validation"), node_errors
        )
    return PromptVerdict(outputs=outputs)


def output_nodes(prompt: dict[str, Any], object_info: dict[str, Any]) -> list[str]:
    if object_info:
        return [str(node_id) for node_id, node in prompt.items() if object_info[node["class_type"]].get("output_node")]
    read = {str(value[0]) for node in prompt.values() for value in _inputs(node).values() if is_link(value)}
    return [str(node_id) for node_id in prompt if str(node_id) not in read]


def _inputs(node: dict[str, Any]) -> dict[str, Any]:
    inputs = node.get("inputs")
    return inputs if isinstance(inputs, dict) else {}


def _node_errors(prompt: dict[str, Any], object_info: dict[str, Any], outputs: list[str]) -> dict[str, Any]:
    if not object_info:
        return {}
    errors: dict[str, list[dict[str, Any]]] = {}
    for node_id, node in prompt.items():
        spec = object_info[node["class_type"]]
        declared = _mapping(spec.get("input"))
        required, optional = _mapping(declared.get("required")), _mapping(declared.get("optional"))
        inputs = _inputs(node)
        for name, config in [*required.items(), *optional.items()]:
            if name not in inputs:
                if name in required:
                    errors.setdefault(str(node_id), []).append(
                        comfy_error("required_input_missing", "Required input is missing", name, {"input_name": name})
                    )
                continue
            problem = _value_problem(node["class_type"], name, config, inputs[name])
            if problem:
                errors.setdefault(str(node_id), []).append(problem)
    return _with_dependents(prompt, errors, outputs)


def _value_problem(class_type: str, name: str, config: Any, value: Any) -> dict[str, Any] | None:
    """What ComfyUI's validate_inputs says of a constant: a choice input (a list of options, or
    ["COMBO", {"options": [...]}]) given something else; an INT or FLOAT that does not convert, or
    is below its min or above its max. Loader inputs are not judged here: an uploaded name became an
    asset reference, which its own check judges, and a GPU machine's input folder is not the front
    door's to list."""
    if (class_type, name) in LOADER_KINDS or is_link(value):
        return None
    if isinstance(value, str) and value.startswith((ASSET_PREFIX, OUTPUT_PREFIX)):
        return None
    options = _options(config)
    if options is not None:
        return None if value in options else _not_in_list(name, config, value, options)
    kind = config[0] if isinstance(config, list) and config and isinstance(config[0], str) else ""
    if kind not in ("INT", "FLOAT"):
        return None
    extra = config[1] if len(config) > 1 and isinstance(config[1], dict) else {}
    received = value if _scalar(value) else None
    try:
        number = int(value) if kind == "INT" else float(value)
    except (TypeError, ValueError, OverflowError) as exc:
        return comfy_error(
            "invalid_input_type",
            f"Failed to convert an input value to a {kind} value",
            f"{name}, {str(value)[:200]}, {exc}",
            {"input_name": name, "input_config": config, "received_value": received, "exception_message": str(exc)},
        )
    info = {"input_name": name, "input_config": config, "received_value": number}
    low, high = _number_or_none(extra.get("min")), _number_or_none(extra.get("max"))
    if low is not None and number < low:
        return comfy_error("value_smaller_than_min", f"Value {number} smaller than min of {low}", name, info)
    if high is not None and number > high:
        return comfy_error("value_bigger_than_max", f"Value {number} bigger than max of {high}", name, info)
    return None


def _not_in_list(name: str, config: Any, value: Any, options: list[Any]) -> dict[str, Any]:
    shown = ", ".join(repr(option) for option in options[:20]) + (", ..." if len(options) > 20 else "")
    return comfy_error(
        "value_not_in_list",
        "Value not in list",
        f"{name}: '{str(value)[:200]}' not in [{shown}]",
        {"input_name": name, "input_config": config, "received_value": value if _scalar(value) else None},
    )


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _number_or_none(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _options(config: Any) -> list[Any] | None:
    if not isinstance(config, list) or not config:
        return None
    if isinstance(config[0], list):
        return config[0]
    if config[0] == "COMBO" and len(config) > 1 and isinstance(config[1], dict):
        options = config[1].get("options")
        return options if isinstance(options, list) else None
    return None


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) or value is None


def _project_errors(prompt: dict[str, Any], workflow: Any, user: Any, outputs: list[str]) -> dict[str, Any]:
    problems = workflow_problems(workflow)
    if not problems:
        problems = asset_reference_problems(workflow, user) + output_reference_problems(workflow, user)
    errors: dict[str, list[dict[str, Any]]] = {}
    for problem in problems:
        match = _NODE_PROBLEM.match(problem)
        node_id = match.group(1) if match and match.group(1) in prompt else ""
        errors.setdefault(node_id, []).append(comfy_error("refused_by_server", "Refused by this server", problem))
    return _with_dependents(prompt, errors, outputs)


def _with_dependents(
    prompt: dict[str, Any], errors: dict[str, list[dict[str, Any]]], outputs: list[str]
) -> dict[str, Any]:
    """ComfyUI's node_errors entries: each node's errors, the output nodes that need it, its class.
    A problem of the whole prompt (no node named) is listed under the first output node."""
    if "" in errors:
        errors.setdefault(outputs[0], []).extend(errors.pop(""))
    needs = _upstream_of_outputs(prompt, outputs)
    return {
        node_id: {
            "errors": items,
            "dependent_outputs": [output for output in outputs if node_id in needs[output]],
            "class_type": prompt[node_id]["class_type"],
        }
        for node_id, items in errors.items()
    }


def _upstream_of_outputs(prompt: dict[str, Any], outputs: Iterable[str]) -> dict[str, set[str]]:
    """Each output node's set of the nodes it reads from, itself included."""
    graph = {str(node_id): node for node_id, node in prompt.items()}
    found: dict[str, set[str]] = {}
    for output in outputs:
        seen: set[str] = set()
        stack = [output]
        while stack:
            node_id = stack.pop()
            if node_id in seen or node_id not in graph:
                continue
            seen.add(node_id)
            stack.extend(str(value[0]) for value in _inputs(graph[node_id]).values() if is_link(value))
        found[output] = seen
    return found
