"""ComfyUI's error answers: `{"error": {"type", "message", "details", "extra_info"}, "node_errors": {...}}`
for a refused prompt, and the same error object for everything else the front door refuses."""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse


def comfy_error(kind: str, message: str, details: str = "", extra_info: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra_info or {}}


def prompt_refused(error: dict[str, Any], node_errors: dict[str, Any] | None = None) -> JsonResponse:
    """POST /prompt's 400, in ComfyUI's shape."""
    return JsonResponse({"error": error, "node_errors": node_errors or {}}, status=400)


def refused(message: str, *, status: int = 400, kind: str = "invalid_request", details: str = "") -> JsonResponse:
    """Any other refusal: the error object ComfyUI uses, and the reason."""
    return JsonResponse({"error": comfy_error(kind, message, details)}, status=status)


def not_supported(what: str, *, why: str = "") -> JsonResponse:
    """501: ComfyUI has this, the front door does not do it (rather than answer it wrongly)."""
    message = f"{what} is not supported by this server's ComfyUI front door"
    return refused(f"{message}: {why}" if why else message, status=501, kind="not_supported")
