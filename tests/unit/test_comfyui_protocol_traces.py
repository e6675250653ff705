"""The ComfyUI client reads everything real ComfyUI sent in the recorded traces as ComfyUI meant it.

Websocket frames go through the parsers; HTTP answers through `ComfyUIClient` itself, served by a
transport that replays the trace's recorded answers (no server). What is checked is what the
tracker relies on: every message read, previews shown, each output file found, a vanished prompt
recognised as gone.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from requests.adapters import BaseAdapter

from comfyui import ComfyUIClient, history_outputs, parse_binary_frame, parse_text_frame
from tests.conftest import TRACES_DIR, load_trace

TRACES = sorted(path.name for path in TRACES_DIR.glob("*.jsonl"))
FINISHED = {"execution_success": "success", "execution_error": "error", "execution_interrupted": "error"}


class RecordedComfyUI(BaseAdapter):
    """Answers each request with what ComfyUI answered to the same method and path in the trace."""

    def __init__(self, trace: list[dict[str, Any]]) -> None:
        super().__init__()
        self.answers = {(e["method"], e["path"]): e for e in trace if e["kind"] == "http"}

    def send(  # type: ignore[override]  # a fake transport takes requests' keyword arguments and ignores them
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        url = urlsplit(request.url or "")
        recorded = self.answers.get((request.method, url.path + (f"?{url.query}" if url.query else "")))
        response = requests.Response()
        response.request, response.url = request, request.url or ""
        if recorded is None:
            response.status_code, response.raw = 404, io.BytesIO(b"404: Not Found")
            return response
        body = recorded["response"]
        response.status_code = recorded["status"]
        if isinstance(body, str):
            response.raw = io.BytesIO(body.encode())
            response.headers["Content-Type"] = "text/plain; charset=utf-8"
        else:
            response.raw = io.BytesIO(json.dumps(body).encode())
            response.headers["Content-Type"] = "application/json; charset=utf-8"
        return response

    def close(self) -> None:
        pass


def recorded_client(trace: list[dict[str, Any]]) -> ComfyUIClient:
    client = ComfyUIClient("http://gpu-box:8188")
    client._session.mount("http://", RecordedComfyUI(trace))
    return client


def ws_messages(trace: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["msg"] for e in trace if e["kind"] == "ws"]


def submitted(trace: list[dict[str, Any]]) -> list[str]:
    return [
        e["response"]["prompt_id"]
        for e in trace
        if e["kind"] == "http" and e["path"] == "/prompt" and e["status"] == 200
    ]


@pytest.mark.parametrize("trace_name", TRACES)
def test_every_text_frame_comfyui_sent_is_read_as_sent(trace_name: str) -> None:
    sent = ws_messages(load_trace(trace_name))
    read = [parse_text_frame(json.dumps(message)) for message in sent]
    assert [(m.type, m.data) if m else None for m in read] == [(m["type"], m.get("data") or {}) for m in sent]
    assert [m.prompt_id for m in read if m] == [(m.get("data") or {}).get("prompt_id") for m in sent]


@pytest.mark.parametrize("trace_name", ["preview.jsonl", "preview_metadata.jsonl"])
def test_every_preview_frame_is_a_jpeg_a_browser_can_show(trace_name: str) -> None:
    frames = [e for e in load_trace(trace_name) if e["kind"] == "ws_binary"]
    assert frames, "the trace has preview frames"
    for frame in frames:
        preview = parse_binary_frame(base64.b64decode(frame["b64"]))
        assert preview is not None, frame["b64"][:40]
        assert preview.media_type == "image/jpeg" and preview.image.startswith(b"\xff\xd8\xff")
        if frame["event_type"] == 4:  # negotiated: the frame says whose preview it is
            assert preview.prompt_id == frame["metadata"]["prompt_id"]
            assert preview.metadata["node_id"] == frame["metadata"]["node_id"]
        else:
            assert preview.prompt_id is None


def finished_prompts(trace: list[dict[str, Any]]) -> dict[str, str]:
    """prompt_id -> "success" / "error", from the websocket messages that end a prompt."""
    return {
        m["data"]["prompt_id"]: FINISHED[m["type"]]
        for m in ws_messages(trace)
        if m["type"] in FINISHED and m["data"].get("prompt_id")
    }


def reported_files(trace: list[dict[str, Any]], prompt_id: str) -> set[tuple[str, str, str, str]]:
    """(node, filename, subfolder, type) of every file the `executed` messages announced."""
    return {
        (m["data"]["node"], item["filename"], item["subfolder"], item["type"])
        for m in ws_messages(trace)
        if m["type"] == "executed" and m["data"].get("prompt_id") == prompt_id
        for items in m["data"]["output"].values()
        for item in items
        if isinstance(item, dict) and "filename" in item
    }


HISTORIES = [
    (name, prompt_id)
    for name in TRACES
    for prompt_id in finished_prompts(load_trace(name))
    if any(e["kind"] == "http" and e["path"] == f"/history/{prompt_id}" for e in load_trace(name))
]


@pytest.mark.parametrize(("trace_name", "prompt_id"), HISTORIES)
def test_history_of_a_finished_prompt_lists_every_file_it_reported(trace_name: str, prompt_id: str) -> None:
    trace = load_trace(trace_name)
    entry = recorded_client(trace).history(prompt_id)
    assert entry is not None
    assert entry.status_str == finished_prompts(trace)[prompt_id]
    listed = {(f.node_id, f.filename, f.subfolder, f.type) for f in history_outputs(entry)}
    assert listed == reported_files(trace, prompt_id)


def test_there_are_histories_with_files_to_fetch() -> None:
    # The comparison above must not pass only because nothing was ever saved.
    assert any(reported_files(load_trace(name), prompt_id) for name, prompt_id in HISTORIES)


def test_queued_prompts_are_found_running_or_pending_in_submission_order() -> None:
    trace = load_trace("queue.jsonl")
    first, second, third = submitted(trace)
    queue = recorded_client(trace).queue()
    assert queue.position(first) == "running"
    assert queue.position(second) == queue.position(third) == "pending"
    assert queue.pending == [second, third]


@pytest.mark.parametrize(
    "trace_name",
    [
        "restart.jsonl",  # ComfyUI restarted: its queue and history live in memory only
        "queue.jsonl",  # deleted from the queue before it ran
    ],
)
def test_a_prompt_comfyui_forgot_is_neither_queued_nor_in_history(trace_name: str) -> None:
    trace = load_trace(trace_name)
    client = recorded_client(trace)
    (gone,) = [e["path"].removeprefix("/history/") for e in trace if e["kind"] == "http" and e["response"] == {}]
    assert gone in submitted(trace)
    assert client.history(gone) is None
    if trace_name == "restart.jsonl":
        assert client.queue().position(gone) is None
