"""`POST /prompt` validation, following ComfyUI's execution.validate_prompt field for field.

Clients show these errors to users and match on `type`, so the error shapes, messages and the
quirks are kept: an upstream error is reported only on the node that has it (outputs depending on
it list themselves in `dependent_outputs`), the top-level `details` only carries the output nodes'
own errors, a prompt with at least one valid output is accepted (with `node_errors` for the rest),
and literal inputs are converted in place (so history shows `5.0` where `5` was sent).
"""

from __future__ import annotations

import logging
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any

from .node_registry import NodeRegistry
from .nodes import ANY, Node

logger = logging.getLogger(__name__)

Error = dict[str, Any]


@dataclass
class ValidationResult:
    ok: bool
    error: Error | None = None
    outputs: list[str] = field(default_factory=list)
    node_errors: dict[str, Any] = field(default_factory=dict)


def full_type_name(cls: type) -> str:
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _prompt_error(kind: str, message: str, details: str) -> Error:
    return {"type": kind, "message": message, "details": details, "extra_info": {}}


def validate_prompt(
    registry: NodeRegistry, prompt: dict[str, Any], partial_execution_targets: list[str] | None = None
) -> ValidationResult:
    outputs: list[str] = []
    for node_id, node in prompt.items():
        if "class_type" not in node:
            return ValidationResult(
                False,
                _prompt_error(
                    "invalid_prompt",
                    "Cannot execute because a node is missing the class_type property.",
                    f"Node ID '#{node_id}'",
                ),
            )
        class_type = node["class_type"]
        cls = registry.get(class_type)
        if cls is None:
            return ValidationResult(
                False,
                _prompt_error(
                    "invalid_prompt",
                    f"Cannot execute because node {class_type} does not exist.",
                    f"Node ID '#{node_id}'",
                ),
            )
        if cls.OUTPUT_NODE and (partial_execution_targets is None or node_id in partial_execution_targets):
            outputs.append(node_id)

    if not outputs:
        return ValidationResult(False, _prompt_error("prompt_no_outputs", "Prompt has no outputs", ""))

    return _validate_outputs(registry, prompt, outputs)


def _validate_outputs(registry: NodeRegistry, prompt: dict[str, Any], outputs: list[str]) -> ValidationResult:
    good_outputs: list[str] = []
    failed: list[tuple[str, list[Error]]] = []
    node_errors: dict[str, Any] = {}
    validated: dict[str, tuple[bool, list[Error]]] = {}
    for output in outputs:
        try:
            valid, reasons = _validate_inputs(registry, prompt, output, validated)
        except Exception as error:
            reason = _exception_reason("exception_during_validation", "Exception when validating node", error)
            valid, reasons = False, [reason]
            validated[output] = (False, reasons)
        if valid:
            good_outputs.append(output)
            continue
        failed.append((output, reasons))
        for node_id, (node_valid, node_reasons) in validated.items():
            if node_valid or not node_reasons:
                continue
            entry = node_errors.setdefault(
                node_id, {"errors": node_reasons, "dependent_outputs": [], "class_type": prompt[node_id]["class_type"]}
            )
            entry["dependent_outputs"].append(output)
        logger.error("Failed to validate prompt for output %s: %s", output, reasons)

    if not good_outputs:
        details = "\n".join(f"{e['message']}: {e['details']}" for _, reasons in failed for e in reasons)
        failure: Error = {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": details,
            "extra_info": {},
        }
        return ValidationResult(False, failure, good_outputs, node_errors)
    return ValidationResult(True, None, good_outputs, node_errors)


def _exception_reason(kind: str, message: str, error: Exception, **extra: Any) -> Error:
    return {
        "type": kind,
        "message": message,
        "details": str(error),
        "extra_info": {
            **extra,
            "exception_type": full_type_name(type(error)),
            "traceback": traceback.format_tb(sys.exc_info()[2]),
        },
    }


def _validate_inputs(
    registry: NodeRegistry, prompt: dict[str, Any], node_id: str, validated: dict[str, tuple[bool, list[Error]]]
) -> tuple[bool, list[Error]]:
    if node_id in validated:
        return validated[node_id]
    inputs = prompt[node_id]["inputs"]
    cls = registry[prompt[node_id]["class_type"]]
    class_inputs = registry.input_types(prompt[node_id]["class_type"])
    declared = {**class_inputs.get("required", {}), **class_inputs.get("optional", {})}
    required = class_inputs.get("required", {})

    errors: list[Error] = []
    valid = True
    for name, config in declared.items():
        input_type, extra_info = config[0], (config[1] if len(config) > 1 else {})
        info = [input_type, extra_info]
        if name not in inputs:
            if name in required:
                errors.append(
                    {
                        "type": "required_input_missing",
                        "message": "Required input is missing",
                        "details": name,
                        "extra_info": {"input_name": name},
                    }
                )
            continue
        value = inputs[name]
        if isinstance(value, list):
            link_error, upstream_valid = _validate_link(registry, prompt, name, value, input_type, info, validated)
            if link_error is not None:
                errors.append(link_error)
            valid = valid and upstream_valid
            continue
        custom = name in cls.VALIDATED_INPUTS
        literal_error = _validate_literal(inputs, name, value, input_type, extra_info, info, convert_only=custom)
        if literal_error is not None:
            errors.append(literal_error)
    if cls.VALIDATED_INPUTS:
        errors += _custom_validation_errors(registry, cls, inputs)

    result = (not errors and valid, errors)
    validated[node_id] = result
    return result


def _custom_validation_errors(registry: NodeRegistry, cls: type[Node], inputs: dict[str, Any]) -> list[Error]:
    """ComfyUI calls the class's VALIDATE_INPUTS with the inputs it names and reports a refusal once
    per such input: "<input> - <reason>" (just "<input>" when it returned False)."""
    given = {name: inputs.get(name) for name in cls.VALIDATED_INPUTS if name in inputs}
    verdict = cls.validate_inputs(registry.options, **given)
    if verdict is True:
        return []
    reason = "" if verdict is False else f" - {verdict}"
    return [
        {
            "type": "custom_validation_failed",
            "message": "Custom validation failed for node",
            "details": f"{name}{reason}",
            "extra_info": {"input_name": name},
        }
        for name in given
    ]


def _validate_link(
    registry: NodeRegistry,
    prompt: dict[str, Any],
    name: str,
    value: list[Any],
    input_type: Any,
    info: list[Any],
    validated: dict[str, tuple[bool, list[Error]]],
) -> tuple[Error | None, bool]:
    """Check a [node_id, slot] input; returns (its own error, whether upstream validated)."""
    if len(value) != 2:
        return {
            "type": "bad_linked_input",
            "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
            "details": name,
            "extra_info": {"input_name": name, "input_config": info, "received_value": value},
        }, True
    source_id, slot = value
    # Like ComfyUI, a link to a missing node raises here and surfaces as exception_during_validation.
    received_type = registry[prompt[source_id]["class_type"]].RETURN_TYPES[slot]
    if not _types_match(received_type, input_type):
        return {
            "type": "return_type_mismatch",
            "message": "Return type mismatch between linked nodes",
            "details": f"{name}, received_type({received_type}) mismatch input_type({input_type})",
            "extra_info": {
                "input_name": name,
                "input_config": info,
                "received_type": received_type,
                "linked_node": value,
            },
        }, True
    try:
        upstream_valid, _ = _validate_inputs(registry, prompt, source_id, validated)
    except Exception as error:
        reason = _exception_reason(
            "exception_during_inner_validation",
            "Exception when validating inner node",
            error,
            input_name=name,
            input_config=info,
            exception_message=str(error),
            linked_node=value,
        )
        validated[source_id] = (False, [reason])
        return None, False
    return None, upstream_valid


def _types_match(received_type: Any, input_type: Any) -> bool:
    if received_type == input_type or ANY in (received_type, input_type):
        return True
    if not isinstance(received_type, str) or not isinstance(input_type, str):
        return False
    received = {t.strip() for t in received_type.split(",")}
    accepted = {t.strip() for t in input_type.split(",")}
    return bool(received & accepted)


_CONVERTERS = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}


def _validate_literal(
    inputs: dict[str, Any],
    name: str,
    value: Any,
    input_type: Any,
    extra_info: dict[str, Any],
    info: list[Any],
    *,
    convert_only: bool = False,
) -> Error | None:
    """Convert a literal input to its type, then check its bounds and list (unless the class's
    VALIDATE_INPUTS takes it: `convert_only`)."""
    if isinstance(value, dict) and "__value__" in value:
        value = inputs[name] = value["__value__"]
    converter = _CONVERTERS.get(input_type) if isinstance(input_type, str) else None
    if converter is not None:
        try:
            value = inputs[name] = converter(value)
        except Exception as error:
            return {
                "type": "invalid_input_type",
                "message": f"Failed to convert an input value to a {input_type} value",
                "details": f"{name}, {value}, {error}",
                "extra_info": {
                    "input_name": name,
                    "input_config": info,
                    "received_value": value,
                    "exception_message": str(error),
                },
            }
    if convert_only:
        return None
    if "min" in extra_info and value < extra_info["min"]:
        return {
            "type": "value_smaller_than_min",
            "message": f"Value {value} smaller than min of {extra_info['min']}",
            "details": name,
            "extra_info": {"input_name": name, "input_config": info, "received_value": value},
        }
    if "max" in extra_info and value > extra_info["max"]:
        return {
            "type": "value_bigger_than_max",
            "message": f"Value {value} bigger than max of {extra_info['max']}",
            "details": name,
            "extra_info": {"input_name": name, "input_config": info, "received_value": value},
        }
    if isinstance(input_type, list) and value not in input_type:
        # ComfyUI does not echo long lists back (think thousands of model files).
        too_long = len(input_type) > 20
        return {
            "type": "value_not_in_list",
            "message": "Value not in list",
            "details": f"{name}: '{value}' not in {f'(list of length {len(input_type)})' if too_long else input_type}",
            "extra_info": {"input_name": name, "input_config": None if too_long else info, "received_value": value},
        }
    return None
