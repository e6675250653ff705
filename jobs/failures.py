"""The failure taxonomy's rules, in one place: ComfyUI's reports in, a category and a reason out.

The tracker and the sweeps both judge with these: what ComfyUI's errors mean, when a prompt counts
as lost, and when a job is stuck or timed out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from jobs.eta import NodeEstimate
from jobs.models import FailureCategory, Job, JobAttempt

OOM_MARKERS = ("outofmemoryerror", "cuda out of memory", "out of memory")
# Inputs through which ComfyUI's loaders name model files: a value missing from their list is a
# missing model. Not every `*_name` is one: `sampler_name` lists samplers, a bad one is a bad input.
MODEL_FILE_INPUTS = frozenset(
    {
        "ckpt_name",
        "lora_name",
        "vae_name",
        "unet_name",
        "clip_name",
        "clip_name1",
        "clip_name2",
        "clip_name3",
        "clip_name4",
        "control_net_name",
        "upscale_model_name",
        "model_name",  # UpscaleModelLoader
        "style_model_name",
        "gligen_name",
        "hypernetwork_name",
        "photomaker_model_name",
        "audio_encoder_name",
    }
)
# What model files are called, for loaders of custom node packs whose input names we do not know.
MODEL_FILE_EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf")
# Details of a failure kept past the traceback and message: ComfyUI's node_errors, bounded piecewise
# first (so a huge body keeps its shape), then as a whole.
DETAILS_TEXT_CHARS = 2000
DETAILS_ITEMS = 50
DETAILS_DEPTH = 8
DETAILS_SMALL_BYTES = 500


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
    if not (exception_type or message or data.get("node_id")):
        # The prompt ended without success and ComfyUI's history says nothing of why (an empty or
        # unreadable record): say exactly that, never "node #None".
        return Failure(
            category=FailureCategory.NODE_ERROR,
            message="ComfyUI ended the prompt without success and without saying why (no execution_error)",
            details=details,
        )
    if any(marker in text for marker in OOM_MARKERS):
        category = FailureCategory.OUT_OF_MEMORY
    elif exception_type.endswith("FileNotFoundError") and "model" in text:
        category = FailureCategory.MISSING_MODEL
    else:
        category = FailureCategory.NODE_ERROR
    summary = stored_message(f"{data.get('node_type') or 'node'} #{data.get('node_id')}: {exception_type}: {message}")
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
    if any(_names_missing_model_file(item) for item in _node_error_items(details.get("node_errors"))):
        return Failure(FailureCategory.MISSING_MODEL, message, details)
    return Failure(FailureCategory.VALIDATION, message, details)


def _node_error_items(node_errors: Any) -> list[dict[str, Any]]:
    """Every error item of a rejection's `node_errors` ({node id: {"errors": [...]}}), whatever its shape."""
    items: list[dict[str, Any]] = []
    for node_error in node_errors.values() if isinstance(node_errors, dict) else ():
        errors = node_error.get("errors") if isinstance(node_error, dict) else None
        items += [item for item in errors if isinstance(item, dict)] if isinstance(errors, list) else []
    return items


def _names_missing_model_file(item: dict[str, Any]) -> bool:
    """ComfyUI refused a value not in an input's list, and that list is one of model files: the input
    is a known loader input, or the value, or any value the list offers, is a model file's name."""
    if item.get("type") != "value_not_in_list":
        return False
    extra = item["extra_info"] if isinstance(item.get("extra_info"), dict) else {}
    if str(extra.get("input_name", "")).lower() in MODEL_FILE_INPUTS:
        return True
    config = extra.get("input_config")
    offered = config[0] if isinstance(config, list) and config and isinstance(config[0], list) else []
    return any(_is_model_file(value) for value in [extra.get("received_value"), *offered])


def _is_model_file(value: Any) -> bool:
    return isinstance(value, str) and value.lower().endswith(MODEL_FILE_EXTENSIONS)


def failure_from_internal_error(exc: BaseException) -> Failure:
    """Something unexpected broke while following the job (a bug, a database refusal, an answer of a
    shape nobody foresaw): the job ends here instead of being taken up again and again."""
    if isinstance(exc, SoftTimeLimitExceeded):
        return Failure(FailureCategory.TIMED_OUT, "the tracking task ran past its time limit")
    text = stored_message(f"{type(exc).__name__}: {exc}")
    return Failure(
        FailureCategory.INTERNAL_ERROR,
        f"the tracker stopped on an unexpected error: {text}",
        {"exception_type": type(exc).__name__},
    )


@dataclass
class OutputReport:
    """What became of the outputs ComfyUI listed for a prompt that succeeded."""

    listed: int
    too_many: int = 0  # past JOB_MAX_OUTPUTS: not fetched
    stored: int = 0
    too_large: int = 0  # past JOB_OUTPUT_MAX_BYTES: not stored
    unfetched: list[str] = field(default_factory=list)  # /view refused, redirected or broke off
    unstored: list[str] = field(default_factory=list)  # the file store stayed down (STORAGE_RETRY_SECONDS)


def failure_from_outputs(report: OutputReport) -> Failure | None:
    """A prompt that succeeded completes with the outputs that could be stored, the skipped ones named
    on its timeline. It fails `output_missing` when an output could not be fetched at all, or when
    ComfyUI listed outputs and not one of them could be kept; `storage_unavailable` when the file
    store stayed down while they were stored (they are still in ComfyUI's output folder, named in the
    details; the ones stored are kept)."""
    if report.unstored:
        more = f" (and {len(report.unstored) - 1} more)" if len(report.unstored) > 1 else ""
        return Failure(
            FailureCategory.STORAGE_UNAVAILABLE,
            stored_message(
                f"the file store was unavailable for {settings.STORAGE_RETRY_SECONDS:.0f}s: "
                f"{len(report.unstored)} of {report.listed} outputs could not be stored: {report.unstored[0]}{more}"
            ),
            {"unstored": report.unstored[:DETAILS_ITEMS], "stored": report.stored},
        )
    if report.unfetched:
        more = f" (and {len(report.unfetched) - 1} more)" if len(report.unfetched) > 1 else ""
        return Failure(
            FailureCategory.OUTPUT_MISSING,
            stored_message(
                f"{len(report.unfetched)} of {report.listed} outputs could not be fetched: {report.unfetched[0]}{more}"
            ),
            {"unfetched": report.unfetched[:DETAILS_ITEMS], "stored": report.stored},
        )
    if report.listed and not report.stored:
        return Failure(
            FailureCategory.OUTPUT_MISSING,
            f"none of the {report.listed} outputs ComfyUI listed could be stored "
            f"({report.too_large} larger than {settings.JOB_OUTPUT_MAX_BYTES} bytes, "
            f"{report.too_many} past {settings.JOB_MAX_OUTPUTS} per job)",
            {"too_large": report.too_large, "too_many": report.too_many},
        )
    return None


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


# --- how much of a failure is kept ------------------------------------------------------------------


def stored_message(text: str) -> str:
    """An error message as stored: at most JOB_ERROR_MESSAGE_MAX_CHARS characters."""
    return _shortened(text, settings.JOB_ERROR_MESSAGE_MAX_CHARS)


def stored_details(details: dict[str, Any]) -> dict[str, Any]:
    """A failure's details as stored: ComfyUI sent a 5 MB message and a 20 MB traceback once, and the
    job's REST detail carried all 26 MB. The traceback keeps its first and last lines, the message
    its start, the rest (node_errors) JOB_ERROR_DETAILS_MAX_BYTES; `truncated` says something was cut."""
    kept = dict(details)
    cut = False
    if "traceback" in kept:
        kept["traceback"], cut = _traceback_bounded(kept["traceback"], settings.JOB_ERROR_TRACEBACK_MAX_CHARS)
    if isinstance(kept.get("exception_message"), str):
        message = stored_message(kept["exception_message"])
        cut = cut or message != kept["exception_message"]
        kept["exception_message"] = message
    special: dict[str, Any] = {key: kept.pop(key) for key in ("traceback", "exception_message") if key in kept}
    rest = _json_bounded(kept, settings.JOB_ERROR_DETAILS_MAX_BYTES)
    cut = cut or rest != kept
    bounded = {**rest, **special}
    if cut:
        bounded["truncated"] = True
    return bounded


def _shortened(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    marker = f" [... {len(text) - limit} more characters]"
    return text[: max(limit - len(marker), 0)] + marker


def _traceback_bounded(lines: Any, limit: int) -> tuple[list[str], bool]:
    """ComfyUI's traceback (a list of lines, sometimes one string) in about `limit` characters of
    JSON: its first and last lines, where the call and the exception are, and a line saying what went."""
    if isinstance(lines, str):
        lines = lines.splitlines(keepends=True)
    lines = [str(line) for line in lines] if isinstance(lines, list) else [str(lines)]
    total = sum(map(_line_cost, lines))
    if total <= limit:
        return lines, False
    half = limit // 2
    head = _lines_within((_shortened(line, half) for line in lines), half)
    tail = _lines_within((_shortened(line, half) for line in reversed(lines)), half)[::-1]
    left_out = len(lines) - len(head) - len(tail)
    return [*head, f"[... {left_out} lines of traceback left out ...]\n", *tail], True


def _line_cost(line: str) -> int:
    # A line as stored: its characters, its quotes, the separator, the escaped newline.
    return len(line) + 4


def _lines_within(lines: Iterable[str], budget: int) -> list[str]:
    kept: list[str] = []
    for line in lines:
        budget -= _line_cost(line)
        if budget < 0:
            break
        kept.append(line)
    return kept


def _json_bounded(value: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """`value` if its JSON fits in `max_bytes`; else with long strings, lists and objects cut short;
    else an excerpt of its JSON."""
    if _json_size(value) <= max_bytes:
        return value
    pruned = _pruned(value, DETAILS_DEPTH)
    if isinstance(pruned, dict) and _json_size(pruned) <= max_bytes:
        return pruned
    # Still too large: the small top-level entries (node id, node type, ...) and an excerpt of the rest.
    small = {k: v for k, v in pruned.items() if _json_size(v) <= DETAILS_SMALL_BYTES}
    budget = max(max_bytes - _json_size(small) - 100, 0)
    rest = {k: v for k, v in pruned.items() if k not in small}
    return {**small, "excerpt": json.dumps(rest, default=str)[:budget]}


def _json_size(value: Any) -> int:
    return len(json.dumps(value, default=str).encode())


def _pruned(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return _shortened(value, DETAILS_TEXT_CHARS)
    if depth <= 0 and isinstance(value, dict | list):
        return "[... nested too deep ...]"
    if isinstance(value, dict):
        pruned = {str(k)[:200]: _pruned(v, depth - 1) for k, v in list(value.items())[:DETAILS_ITEMS]}
        if len(value) > DETAILS_ITEMS:
            pruned["..."] = f"{len(value) - DETAILS_ITEMS} more entries"
        return pruned
    if isinstance(value, list):
        pruned_list = [_pruned(v, depth - 1) for v in value[:DETAILS_ITEMS]]
        if len(value) > DETAILS_ITEMS:
            pruned_list.append(f"[... {len(value) - DETAILS_ITEMS} more items]")
        return pruned_list
    return value
