"""A front-door prompt in ComfyUI's shapes: a queue item `[number, prompt_id, prompt, extra_data,
outputs_to_execute]` and a history entry `{"prompt", "outputs", "status", "meta"}`, built from the
job (its status, times, failure) and its JobOutput rows, whose node ids are the client's own."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from comfy_api.input_names import prompt_as_sent
from comfy_api.models import FrontDoorPrompt
from comfy_api.outputs import node_outputs
from jobs.models import Job, JobStatus


def milliseconds(moment: datetime | None) -> int | None:
    return int(moment.timestamp() * 1000) if moment is not None else None


def queue_item(prompt: FrontDoorPrompt) -> list[Any]:
    job = prompt.job
    return [
        prompt.number,
        prompt.prompt_id,
        prompt_as_sent(job.workflow, prompt.input_names),
        prompt.extra_data,
        prompt.outputs_to_execute,
    ]


def history_entry(prompt: FrontDoorPrompt) -> dict[str, Any]:
    """A finished prompt's entry; its outputs are prefetched or read here."""
    job = prompt.job
    outputs = node_outputs(job.outputs.all())
    return {
        "prompt": queue_item(prompt),
        "outputs": outputs,
        "status": {
            "status_str": "success" if job.status == JobStatus.COMPLETED else "error",
            "completed": job.status == JobStatus.COMPLETED,
            "messages": status_messages(prompt.prompt_id, job),
        },
        "meta": {
            node_id: {"node_id": node_id, "display_node": node_id, "parent_node": None, "real_node_id": node_id}
            for node_id in outputs
        },
    }


def status_messages(prompt_id: str, job: Job) -> list[list[Any]]:
    """The execution messages ComfyUI keeps in a history entry, from what the project recorded."""
    messages: list[list[Any]] = []
    started = job.started_at or job.submitted_at
    if started is not None:
        at = milliseconds(started)
        messages.append(["execution_start", {"prompt_id": prompt_id, "timestamp": at}])
        messages.append(
            ["execution_cached", {"nodes": list(job.cached_nodes or []), "prompt_id": prompt_id, "timestamp": at}]
        )
    finished = milliseconds(job.finished_at)
    if job.status == JobStatus.COMPLETED:
        messages.append(["execution_success", {"prompt_id": prompt_id, "timestamp": finished}])
    elif job.status == JobStatus.FAILED:
        messages.append(["execution_error", execution_error(prompt_id, job) | {"timestamp": finished}])
    elif job.status == JobStatus.CANCELLED:
        messages.append(["execution_interrupted", execution_interrupted(prompt_id, job) | {"timestamp": finished}])
    return messages


def execution_error(prompt_id: str, job: Job) -> dict[str, Any]:
    """ComfyUI's `execution_error` for a failed job: the node's exception when ComfyUI raised one,
    else the project's failure category and message (a refusal, a lost GPU, a time limit)."""
    details = job.error_details if isinstance(job.error_details, dict) else {}
    node_id = details.get("node_id") or job.current_node_id or None
    return {
        "prompt_id": prompt_id,
        "node_id": str(node_id) if node_id is not None else None,
        "node_type": details.get("node_type") or job.current_node_class or None,
        "executed": list(details.get("executed") or executed_nodes(job)),
        "exception_message": details.get("exception_message") or job.error_message,
        "exception_type": details.get("exception_type") or job.failure_category,
        "traceback": list(details.get("traceback") or []),
        "current_inputs": {},
        "current_outputs": {},
    }


def execution_interrupted(prompt_id: str, job: Job) -> dict[str, Any]:
    return {
        "prompt_id": prompt_id,
        "node_id": job.current_node_id or None,
        "node_type": job.current_node_class or None,
        "executed": executed_nodes(job),
    }


def executed_nodes(job: Job) -> list[str]:
    """The nodes that ran (or came from cache) in the job's last attempt, as ComfyUI's `executed`
    lists them: from its node timings, which a history page prefetches."""
    ran = [timing.node_id for timing in job.node_timings.all() if timing.attempt == job.attempt]
    return list(dict.fromkeys([*map(str, job.cached_nodes or []), *ran]))
