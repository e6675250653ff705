"""The failure taxonomy's rules, in one place: ComfyUI's reports in, a category and a reason out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jobs.models import FailureCategory

OOM_MARKERS = ("outofmemoryerror", "cuda out of memory", "out of memory")
# Inputs through which loaders name model files: a value missing from their list is a missing model.
MODEL_INPUT_SUFFIXES = ("_name", "ckpt", "model", "lora", "vae", "unet", "clip")


@dataclass(frozen=True)
class Failure:
    category: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


def failure_from_execution_error(data: dict[str, Any]) -> Failure:
    """An `execution_error` message (or the same record from /history)."""
    exception_type = str(data.get("exception_type") or "")
    message = str(data.get("exception_message") or "").strip()
    details = {
        "node_id": data.get("node_id"),
        "node_type": data.get("node_type"),
        "exception_type": exception_type,
        "exception_message": message,
        "traceback": data.get("traceback") or [],
        "executed": data.get("executed") or [],
    }
    text = f"{exception_type} {message}".lower()
    if any(marker in text for marker in OOM_MARKERS):
        category = FailureCategory.OUT_OF_MEMORY
    elif exception_type.endswith("FileNotFoundError") and "model" in text:
        category = FailureCategory.MISSING_MODEL
    else:
        category = FailureCategory.NODE_ERROR
    summary = f"{data.get('node_type') or 'node'} #{data.get('node_id')}: {exception_type}: {message}"
    return Failure(category=category, message=summary, details=details)


def failure_from_interruption(data: dict[str, Any]) -> Failure:
    return Failure(
        category=FailureCategory.INTERRUPTED,
        message=f"interrupted in {data.get('node_type') or 'node'} #{data.get('node_id')} by someone else",
        details={"node_id": data.get("node_id"), "node_type": data.get("node_type")},
    )


def failure_from_rejection(body: Any, message: str) -> Failure:
    """ComfyUI refused the prompt (HTTP 400): unknown node class, missing model, bad input."""
    details = body if isinstance(body, dict) else {"body": body}
    error = details.get("error") if isinstance(details.get("error"), dict) else {}
    if error.get("type") == "invalid_prompt" and "does not exist" in str(error.get("message", "")):
        return Failure(FailureCategory.MISSING_NODE, message, details)
    for node_error in (details.get("node_errors") or {}).values():
        for item in node_error.get("errors", []) if isinstance(node_error, dict) else []:
            input_name = str((item.get("extra_info") or {}).get("input_name", "")).lower()
            if item.get("type") == "value_not_in_list" and input_name.endswith(MODEL_INPUT_SUFFIXES):
                return Failure(FailureCategory.MISSING_MODEL, message, details)
    return Failure(FailureCategory.VALIDATION, message, details)
