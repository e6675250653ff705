"""The failure taxonomy's rules, in one place: ComfyUI's reports in, a category and a reason out.

The tracker and the sweeps both judge with these: what ComfyUI's errors mean, when a prompt counts
as lost, and when a job is stuck or timed out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from jobs.eta import NodeEstimate
from jobs.models import FailureCategory, Job, JobAttempt

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
    error = details["error"] if isinstance(details.get("error"), dict) else {}
    if error.get("type") == "invalid_prompt" and "does not exist" in str(error.get("message", "")):
        return Failure(FailureCategory.MISSING_NODE, message, details)
    for node_error in (details.get("node_errors") or {}).values():
        for item in node_error.get("errors", []) if isinstance(node_error, dict) else []:
            input_name = str((item.get("extra_info") or {}).get("input_name", "")).lower()
            if item.get("type") == "value_not_in_list" and input_name.endswith(MODEL_INPUT_SUFFIXES):
                return Failure(FailureCategory.MISSING_MODEL, message, details)
    return Failure(FailureCategory.VALIDATION, message, details)


def failure_from_vanished_prompt(*, reached_comfyui: bool) -> Failure:
    """The prompt is in neither ComfyUI's queue nor its history."""
    if reached_comfyui:
        return Failure(
            FailureCategory.LOST, "the prompt is neither in ComfyUI's queue nor in its history (ComfyUI restarted?)"
        )
    return Failure(FailureCategory.WORKER_LOST, "the worker died before the prompt reached ComfyUI")


def lost_failure(job: Job) -> Failure:
    """The job's prompt vanished: an attempt row means it reached ComfyUI (which then lost it);
    without one, the worker died before submitting it."""
    reached = job.prompt_id is not None and JobAttempt.objects.filter(prompt_id=job.prompt_id).exists()
    return failure_from_vanished_prompt(reached_comfyui=reached)


def stuck_threshold(expected: NodeEstimate | None) -> float:
    """How long the current node may go without progress: a floor, or a multiple of its usual
    duration when history knows it (a long node that reports no steps is quiet while it works)."""
    usual = expected.seconds if expected is not None and expected.samples else 0.0
    return max(settings.JOB_STUCK_FLOOR_SECONDS, settings.JOB_STUCK_FACTOR * usual)


def stuck_or_timed_out(
    *,
    running_seconds: float | None,
    silent_seconds: float | None,
    expected: NodeEstimate | None,
    node_id: str | None,
    node_name: str,
) -> Failure | None:
    """Running longer than JOB_MAX_SECONDS, or silent longer than the current node's stuck
    threshold; None when the job is fine (or a figure is None: not judged)."""
    if running_seconds is not None and running_seconds > settings.JOB_MAX_SECONDS:
        return Failure(FailureCategory.TIMED_OUT, f"ran longer than the maximum of {settings.JOB_MAX_SECONDS}s")
    if silent_seconds is not None and silent_seconds > stuck_threshold(expected):
        return Failure(
            FailureCategory.STUCK, f"no progress for {silent_seconds:.0f}s in {node_name}", {"node_id": node_id}
        )
    return None
