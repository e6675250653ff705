"""A job, an output and an asset as the API describes them, read into small typed objects.

The full answer stays in `raw`: a field the server adds later is there without a new client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

FINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True)
class Output:
    id: int
    node_id: str
    filename: str  # the name ComfyUI gave it (untrusted); the download's own name may differ
    media_type: str
    size_bytes: int | None
    download_url: str

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Output:
        return cls(
            id=int(data["id"]),
            node_id=str(data.get("node_id") or ""),
            filename=str(data.get("comfy_filename") or ""),
            media_type=str(data.get("media_type") or ""),
            size_bytes=data.get("size_bytes"),
            download_url=str(data["download_url"]),
        )


@dataclass(frozen=True)
class Asset:
    id: str
    media_type: str
    created: bool  # False when the server already had these bytes (200), True for a new asset (201)
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def reference(self) -> str:
        """What a workflow's loader input holds to use this asset (as the server spells it)."""
        return str(self.raw.get("reference") or f"asset:{self.id}")


@dataclass(frozen=True)
class JobState:
    """One job at one moment: what REST answers and what each websocket message carries."""

    id: str
    status: str
    job_type: str
    backend: str
    priority: int
    version: int
    seq: int
    progress_percent: float
    message: str
    node_id: str | None
    node_name: str | None
    node_class: str | None
    step: tuple[float, float] | None  # (value, max) of the current node, as ComfyUI reports it
    queue_position: int | None
    eta_finish_at: datetime | None  # an estimate (the API labels it so), None when there is none
    failure_category: str
    error_message: str
    outputs: tuple[Output, ...]
    retry_of: str | None
    created_at: str
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> JobState:
        node = data.get("current_node") or {}
        step = data.get("step") or None
        eta = data.get("eta") or {}
        error = data.get("error") or {}
        return cls(
            id=str(data["id"]),
            status=str(data["status"]),
            job_type=str(data.get("job_type") or ""),
            backend=str(data.get("backend") or ""),
            priority=int(data.get("priority") or 0),
            version=int(data.get("version") or 0),
            seq=int(data.get("seq") or 0),
            progress_percent=float(data.get("progress_percent") or 0.0),
            message=str(data.get("message") or ""),
            node_id=node.get("id") or None,
            node_name=node.get("name") or node.get("class_type") or None,
            node_class=node.get("class_type") or None,
            step=(float(step["value"]), float(step["max"])) if step else None,
            queue_position=data.get("queue_position"),
            eta_finish_at=_when(eta.get("finish_at")),
            failure_category=str(error.get("category") or data.get("failure_category") or ""),
            error_message=str(error.get("message") or ""),
            outputs=tuple(Output.from_api(item) for item in data.get("outputs") or ()),
            retry_of=str(data["retry_of"]) if data.get("retry_of") else None,
            created_at=str(data.get("created_at") or ""),
            raw=data,
        )


def _when(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None
