"""The `/api/jobs` view of queue and history (ComfyUI's comfy_execution/jobs.py)."""

from __future__ import annotations

from typing import Any

PENDING = "pending"
IN_PROGRESS = "in_progress"
COMPLETED = "completed"
FAILED = "failed"
ALL_STATUSES = (PENDING, IN_PROGRESS, COMPLETED, FAILED)

PREVIEWABLE_MEDIA_TYPES = frozenset({"images", "video", "audio"})
THREE_D_EXTENSIONS = (".obj", ".fbx", ".gltf", ".glb")


def _prune(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def _job_metadata(extra_data: dict[str, Any]) -> tuple[int | None, str | None]:
    workflow = (extra_data.get("extra_pnginfo") or {}).get("workflow") or {}
    return extra_data.get("create_time"), workflow.get("id") if isinstance(workflow, dict) else None


def normalize_queue_item(item: list[Any], status: str) -> dict[str, Any]:
    priority, prompt_id, _, extra_data, _ = item
    create_time, workflow_id = _job_metadata(extra_data)
    return _prune(
        {
            "id": prompt_id,
            "status": status,
            "priority": priority,
            "create_time": create_time,
            "outputs_count": 0,
            "workflow_id": workflow_id,
        }
    )


def _is_previewable(media_type: str, item: dict[str, Any]) -> bool:
    if media_type in PREVIEWABLE_MEDIA_TYPES:
        return True
    fmt = item.get("format", "")
    if fmt and fmt.startswith(("video/", "audio/")):
        return True
    return str(item.get("filename", "")).lower().endswith(THREE_D_EXTENSIONS)


def outputs_summary(outputs: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
    """Count output items and pick the preview (an "output" file first), as the frontend does."""
    count = 0
    preview = None
    fallback = None
    for node_id, node_outputs in outputs.items():
        if not isinstance(node_outputs, dict):
            continue
        for media_type, items in node_outputs.items():
            if media_type == "animated" or not isinstance(items, list):
                continue
            for item in items:
                if not isinstance(item, dict):
                    continue
                count += 1
                if preview is None and _is_previewable(media_type, item):
                    enriched = {**item, "nodeId": node_id, "mediaType": media_type}
                    if item.get("type") == "output":
                        preview = enriched
                    elif fallback is None:
                        fallback = enriched
    return count, preview or fallback


def normalize_history_item(
    prompt_id: str, history_item: dict[str, Any], include_outputs: bool = False
) -> dict[str, Any]:
    priority, _, prompt, extra_data, _ = history_item["prompt"]
    create_time, workflow_id = _job_metadata(extra_data)
    status_info = history_item.get("status") or {}
    status = FAILED if status_info.get("status_str") == "error" else COMPLETED
    outputs = history_item.get("outputs", {})
    outputs_count, preview_output = outputs_summary(outputs)

    execution_error = execution_start_time = execution_end_time = None
    for event_name, event_data in status_info.get("messages", []):
        if event_name == "execution_start":
            execution_start_time = event_data.get("timestamp")
        elif event_name in ("execution_success", "execution_error", "execution_interrupted"):
            execution_end_time = event_data.get("timestamp")
            if event_name == "execution_error":
                execution_error = event_data

    job = _prune(
        {
            "id": prompt_id,
            "status": status,
            "priority": priority,
            "create_time": create_time,
            "execution_start_time": execution_start_time,
            "execution_end_time": execution_end_time,
            "execution_error": execution_error,
            "outputs_count": outputs_count,
            "preview_output": preview_output,
            "workflow_id": workflow_id,
        }
    )
    if include_outputs:
        job["outputs"] = outputs
        job["execution_status"] = status_info
        job["workflow"] = {"prompt": prompt, "extra_data": extra_data}
    return job


def find_job(
    prompt_id: str, running: list[list[Any]], queued: list[list[Any]], history: dict[str, Any]
) -> dict[str, Any] | None:
    if prompt_id in history:
        return normalize_history_item(prompt_id, history[prompt_id], include_outputs=True)
    for item in running:
        if item[1] == prompt_id:
            return normalize_queue_item(item, IN_PROGRESS)
    for item in queued:
        if item[1] == prompt_id:
            return normalize_queue_item(item, PENDING)
    return None


def list_jobs(
    running: list[list[Any]],
    queued: list[list[Any]],
    history: dict[str, Any],
    status_filter: list[str] | None = None,
    workflow_id: str | None = None,
    sort_by: str = "created_at",
    sort_order: str = "desc",
    limit: int | None = None,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    statuses = status_filter or list(ALL_STATUSES)
    jobs = []
    if IN_PROGRESS in statuses:
        jobs += [normalize_queue_item(item, IN_PROGRESS) for item in running]
    if PENDING in statuses:
        jobs += [normalize_queue_item(item, PENDING) for item in queued]
    for prompt_id, item in history.items():
        failed = (item.get("status") or {}).get("status_str") == "error"
        if (FAILED if failed else COMPLETED) in statuses:
            jobs.append(normalize_history_item(prompt_id, item))
    if workflow_id:
        jobs = [job for job in jobs if job.get("workflow_id") == workflow_id]
    jobs.sort(key=_sort_key(sort_by), reverse=sort_order == "desc")
    total = len(jobs)
    jobs = jobs[offset:] if offset > 0 else jobs
    return (jobs[:limit] if limit is not None else jobs), total


def _sort_key(sort_by: str) -> Any:
    if sort_by == "execution_duration":

        def duration(job: dict[str, Any]) -> float:
            start, end = job.get("execution_start_time", 0), job.get("execution_end_time", 0)
            return end - start if start and end else 0

        return duration
    return lambda job: job.get("create_time", 0)
