"""ComfyUI's prompt, queue, history and interrupt endpoints, for the caller's own prompts."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from django.conf import settings
from django.db import IntegrityError
from django.http import HttpResponse, JsonResponse
from rest_framework.request import Request

from comfy_api import selectors, services
from comfy_api.endpoint import BodyRefused, FrontDoorView, id_list, json_body
from comfy_api.errors import comfy_error, prompt_refused, refused
from comfy_api.fleet_info import fleet_object_info
from comfy_api.history import history_entry, queue_item
from comfy_api.input_names import prompt_as_sent, uploaded_names_resolved
from comfy_api.models import CLIENT_ID_MAX_CHARS, PROMPT_ID_MAX_CHARS, FrontDoorPrompt
from comfy_api.prompt_checks import prompt_verdict
from comfy_api.ws_announce import front_door_queue_changed

# ComfyUI's editor keeps the whole UI graph in extra_data.extra_pnginfo: a few hundred KB at most.
EXTRA_DATA_MAX_BYTES = 1024 * 1024
# A prompt id is text the client chose: ComfyUI's own are UUIDs.
PROMPT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*\Z")
# A client-given queue number stays an exact integer in JSON and in a 64-bit column.
NUMBER_LIMIT = 2**53
# GET /history answers at most this many entries (ComfyUI's editor asks for 64 at a time).
HISTORY_PAGE_MAX = 200
HISTORY_OFFSET_MAX = 1_000_000
# POST /queue and POST /history delete at most this many ids at once.
IDS_PER_REQUEST = 1000
# GET /queue lists at most this many of the caller's prompts in each list.
QUEUE_LIST_MAX = 1000


def _ok() -> HttpResponse:
    # ComfyUI answers POST /queue, /history and /interrupt with 200 and an empty body.
    return HttpResponse(status=200)


class PromptView(FrontDoorView):
    @property
    def throttle_scope(self) -> str | None:
        return "submit" if self.request.method == "POST" else None

    def get(self, request: Request) -> JsonResponse:
        return JsonResponse({"exec_info": {"queue_remaining": selectors.queue_remaining(request.user)}})

    def post(self, request: Request) -> JsonResponse:
        try:
            body = json_body(request)
        except BodyRefused as exc:
            return prompt_refused(comfy_error("invalid_prompt", str(exc)))
        if not isinstance(body, dict) or "prompt" not in body:
            return prompt_refused(comfy_error("no_prompt", "No prompt provided", "No prompt provided"))
        fields = _submission_fields(body)
        if isinstance(fields, JsonResponse):
            return fields
        prompt = body["prompt"]
        if isinstance(prompt, dict) and len(prompt) > settings.WORKFLOW_MAX_NODES:
            # Before anything reads it node by node (each loader's name is a lookup of the caller's uploads).
            return _field_refused(f"the prompt has {len(prompt)} nodes; the limit is {settings.WORKFLOW_MAX_NODES}")
        workflow, names = uploaded_names_resolved(prompt, request.user) if isinstance(prompt, dict) else (prompt, {})
        verdict = prompt_verdict(prompt, workflow, request.user, fleet_object_info())
        if verdict.error is not None:
            return prompt_refused(verdict.error, verdict.node_errors)
        submission = services.PromptSubmission(
            prompt=prompt, workflow=workflow, input_names=names, outputs=verdict.outputs, **fields
        )
        try:
            row = services.front_door_prompt_create(user=request.user, submission=submission)
        except IntegrityError:
            return _same_prompt_again(request.user, submission)
        front_door_queue_changed(row.user_id)  # the client's socket says `status` now, as ComfyUI does
        return JsonResponse({"prompt_id": row.prompt_id, "number": row.number, "node_errors": {}})


def _submission_fields(body: dict[str, Any]) -> dict[str, Any] | JsonResponse:
    """client_id, prompt_id, number, front and extra_data, checked; or the 400 saying what is wrong."""
    if body.get("partial_execution_targets"):
        return prompt_refused(
            comfy_error(
                "not_supported", "partial_execution_targets is not supported by this server: send the prompt whole"
            )
        )
    client_id = body.get("client_id") or ""
    if not isinstance(client_id, str) or len(client_id) > CLIENT_ID_MAX_CHARS:
        return _field_refused(f"client_id must be text of at most {CLIENT_ID_MAX_CHARS} characters")
    prompt_id = body.get("prompt_id")
    if prompt_id is not None and (
        not isinstance(prompt_id, str) or len(prompt_id) > PROMPT_ID_MAX_CHARS or not PROMPT_ID.match(prompt_id)
    ):
        return _field_refused(f"prompt_id must be at most {PROMPT_ID_MAX_CHARS} letters, digits, '.', '_', ':' or '-'")
    number = body.get("number")
    if number is not None:
        if isinstance(number, bool) or not isinstance(number, int | float):
            return _field_refused("number must be a number")
        # abs() first: math.isfinite of an integer beyond a float's range raises OverflowError.
        if abs(number) >= NUMBER_LIMIT or not math.isfinite(number):
            return _field_refused(f"number must be within ±{NUMBER_LIMIT}")
        number = int(number)
    extra_data = body.get("extra_data") or {}
    if not isinstance(extra_data, dict):
        return _field_refused("extra_data must be an object")
    try:
        size = len(json.dumps(extra_data, allow_nan=False))
    except ValueError:
        return _field_refused("extra_data holds a number JSON cannot carry (NaN or infinity)")
    if size > EXTRA_DATA_MAX_BYTES:
        return _field_refused(f"extra_data is {size} bytes; the limit is {EXTRA_DATA_MAX_BYTES}")
    return {
        "client_id": client_id,
        "prompt_id": prompt_id,
        "number": number,
        "front": bool(body.get("front")),
        "extra_data": extra_data,
    }


def _field_refused(message: str) -> JsonResponse:
    return prompt_refused(comfy_error("invalid_prompt", message))


def _same_prompt_again(user: Any, submission: services.PromptSubmission) -> JsonResponse:
    """The caller's prompt_id is taken: the same prompt again (a retried request) gets the first
    answer; another prompt under the same id is refused."""
    existing = selectors.prompt_by_id(user, submission.prompt_id or "")
    if existing is not None and prompt_as_sent(existing.job.workflow, existing.input_names) == submission.prompt:
        return JsonResponse({"prompt_id": existing.prompt_id, "number": existing.number, "node_errors": {}})
    return prompt_refused(
        comfy_error("prompt_id_in_use", f"you have another prompt with the prompt_id {submission.prompt_id!r}")
    )


class QueueView(FrontDoorView):
    def get(self, request: Request) -> JsonResponse:
        rows = list(selectors.queued_prompts(request.user)[: 2 * QUEUE_LIST_MAX])
        running = [queue_item(row) for row in rows if row.job.status in selectors.RUNNING]
        pending = [queue_item(row) for row in rows if row.job.status in selectors.WAITING]
        return JsonResponse({"queue_running": running[:QUEUE_LIST_MAX], "queue_pending": pending[:QUEUE_LIST_MAX]})

    def post(self, request: Request) -> HttpResponse:
        try:
            clear, ids = _delete_or_clear(request)
        except (BodyRefused, ValueError) as exc:
            return refused(str(exc))
        removed = 0
        if clear:
            removed += services.front_door_queue_delete(user=request.user, prompt_ids=None)
        if ids:
            removed += services.front_door_queue_delete(user=request.user, prompt_ids=ids)
        if removed:
            front_door_queue_changed(int(request.user.pk or 0))
        return _ok()


class HistoryView(FrontDoorView):
    def get(self, request: Request) -> JsonResponse:
        try:
            max_items = _bounded_int(request.query_params.get("max_items"), "max_items", 1, HISTORY_PAGE_MAX)
            offset = _bounded_int(request.query_params.get("offset"), "offset", -1, HISTORY_OFFSET_MAX)
        except ValueError as exc:
            return refused(str(exc))
        rows = _history_page(request.user, max_items or HISTORY_PAGE_MAX, -1 if offset is None else offset)
        return JsonResponse({row.prompt_id: history_entry(row) for row in rows})

    def post(self, request: Request) -> HttpResponse:
        try:
            clear, ids = _delete_or_clear(request)
        except (BodyRefused, ValueError) as exc:
            return refused(str(exc))
        if clear:
            services.front_door_history_hide(user=request.user, prompt_ids=None)
        if ids:
            services.front_door_history_hide(user=request.user, prompt_ids=ids)
        return _ok()


def _delete_or_clear(request: Request) -> tuple[bool, list[str] | None]:
    """What POST /queue and POST /history ask: {"clear": true} and/or {"delete": [prompt ids]} (bounded)."""
    body = json_body(request, empty={})
    if not isinstance(body, dict):
        raise ValueError("the body must be an object with 'delete' or 'clear'")
    return bool(body.get("clear")), id_list(body, "delete", limit=IDS_PER_REQUEST)


def _bounded_int(raw: str | None, name: str, low: int, high: int) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be from {low} to {high}")
    return value


def _history_page(user: Any, max_items: int, offset: int) -> list[FrontDoorPrompt]:
    """As ComfyUI pages its history: oldest first; without an offset, the newest `max_items`."""
    rows = selectors.history_prompts(user).prefetch_related("job__outputs", "job__node_timings")
    if offset < 0:
        newest = list(rows.order_by("-job__finished_at", "-id")[:max_items])
        return newest[::-1]
    return list(rows.order_by("job__finished_at", "id")[offset : offset + max_items])


class HistoryItemView(FrontDoorView):
    def get(self, request: Request, prompt_id: str) -> JsonResponse:
        if len(prompt_id) > PROMPT_ID_MAX_CHARS or not PROMPT_ID.match(prompt_id):
            return JsonResponse({})  # no prompt has such an id (a NUL would reach PostgreSQL: a 500)
        row = selectors.history_prompts(request.user).filter(prompt_id=prompt_id).first()
        return JsonResponse({row.prompt_id: history_entry(row)} if row is not None else {})


class InterruptView(FrontDoorView):
    def post(self, request: Request) -> HttpResponse:
        try:
            body = json_body(request, empty={})
        except BodyRefused as exc:
            return refused(str(exc))
        prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
        if prompt_id is not None and not isinstance(prompt_id, str):
            return refused("prompt_id must be text")
        services.front_door_interrupt(user=request.user, prompt_id=prompt_id)
        return _ok()
