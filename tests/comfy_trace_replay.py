"""A ComfyUI that sends what real ComfyUI sent: one recorded prompt of a trace (tests/data/comfyui-traces),
replayed to the tracker's websocket when the tracker submits its prompt, with the trace's prompt id
replaced by the job's, at the recorded pace (gaps capped). /history answers the trace's record of the
prompt; /view a small PNG for any output; the rest as tests.hostile_comfyui.

What the tracker makes of it (the job's timeline and its broadcasts) is what the front door's websocket
translates back into ComfyUI's messages (tests/unit/test_comfy_ws_contract.py).
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import Callable
from typing import Any

from tests.hostile_comfyui import PNG_1PX, HostileComfyUI

# Recorded gaps longer than this are cut to it: a replay takes seconds, not the recording's minutes.
MAX_GAP_SECONDS = 0.2


def trace_prompts(trace: list[dict[str, Any]]) -> list[str]:
    """The prompt ids ComfyUI accepted in the trace, in order."""
    return [
        e["response"]["prompt_id"]
        for e in trace
        if e["kind"] == "http" and e["path"] == "/prompt" and e["status"] == 200 and isinstance(e["response"], dict)
    ]


def trace_workflow(trace: list[dict[str, Any]], prompt_id: str) -> dict[str, Any]:
    """The workflow the trace submitted as `prompt_id` (from its POST, else from its /history record)."""
    for e in trace:
        accepted = e["kind"] == "http" and e["path"] == "/prompt" and e["status"] == 200
        if accepted and e["response"].get("prompt_id") == prompt_id and (e.get("request") or {}).get("prompt"):
            return dict(e["request"]["prompt"])
    for e in trace:
        if e["kind"] == "http" and e["path"] == f"/history/{prompt_id}" and e["response"]:
            return dict(e["response"][prompt_id]["prompt"][2])
    raise LookupError(f"no workflow for {prompt_id}")


def prompt_run(trace: list[dict[str, Any]], prompt_id: str) -> list[dict[str, Any]]:
    """The websocket frames of one prompt's run: from its POST /prompt to its `executing` null, every
    text and binary frame the client received meanwhile (other prompts' included, as ComfyUI sent them)."""
    start = next(
        i
        for i, e in enumerate(trace)
        if e["kind"] == "http" and e["path"] == "/prompt" and (e.get("response") or {}).get("prompt_id") == prompt_id
    )
    run: list[dict[str, Any]] = []
    for e in trace[start + 1 :]:
        if e["kind"] not in ("ws", "ws_binary"):
            continue
        run.append(e)
        if e["kind"] == "ws" and e["msg"]["type"] == "executing":
            data = e["msg"]["data"]
            if data.get("node") is None and data.get("prompt_id") == prompt_id:
                break
    return run


class TraceComfyUI(HostileComfyUI):
    """`before(message)` runs (on the server's thread) before each text frame is sent: a test's hook
    for what a user did at that moment (the cancel before an interrupt)."""

    def __init__(self, trace: list[dict[str, Any]], prompt_id: str) -> None:
        super().__init__()
        self.trace = trace
        self.recorded_id = prompt_id
        self.run = prompt_run(trace, prompt_id)
        self.before: Callable[[dict[str, Any]], None] = lambda message: None
        # Seconds to wait after each preview frame: a recorded sampler's 50 ms steps can all fall between
        # two of the tracker's broadcasts, and then (rightly) no preview is told at all.
        self.after_preview = 0.0
        self.job_prompt_id = ""
        self.sockets: list[Any] = []
        self.any_file = PNG_1PX
        history = next(
            (e for e in trace if e["kind"] == "http" and e["path"] == f"/history/{prompt_id}" and e["response"]), None
        )
        self.recorded_history = history["response"][prompt_id] if history else self._history_from_messages()

    def start(self) -> TraceComfyUI:
        super().start()
        return self

    def _history_from_messages(self) -> dict[str, Any]:
        """For a trace that never asked /history: the record ComfyUI keeps, from what it sent (the
        outputs its `executed` messages named, and how the prompt ended)."""
        told = [
            e["msg"]
            for e in self.run
            if e["kind"] == "ws" and (e["msg"].get("data") or {}).get("prompt_id") == self.recorded_id
        ]
        outputs = {m["data"]["node"]: m["data"]["output"] for m in told if m["type"] == "executed"}
        succeeded = any(m["type"] == "execution_success" for m in told)
        status = "success" if succeeded else "error"
        return {
            "prompt": [],
            "outputs": outputs,
            "status": {"status_str": status, "completed": succeeded, "messages": []},
        }

    def _rewrite(self, text: str) -> str:
        return text.replace(self.recorded_id, self.job_prompt_id)

    async def _ws(self, request: Any) -> Any:
        from aiohttp import web

        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId", "anonymous")
        await ws.send_str(
            json.dumps({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": sid}})
        )
        self.sockets.append(ws)
        async for _ in ws:
            pass
        self.sockets.remove(ws)
        return ws

    async def _prompt(self, request: Any) -> Any:
        payload = await request.json()
        self.job_prompt_id = str(payload.get("prompt_id"))
        self.submitted.append(self.job_prompt_id)
        asyncio.get_running_loop().create_task(self._replay())
        from tests.hostile_comfyui import _json

        return _json({"prompt_id": self.job_prompt_id, "number": 1, "node_errors": {}})

    async def _replay(self) -> None:
        previous = None
        for entry in self.run:
            if previous is not None:
                await asyncio.sleep(min(max(entry["t"] - previous, 0.0), MAX_GAP_SECONDS))
            previous = entry["t"]
            socket = self.sockets[-1] if self.sockets else None
            if socket is None or socket.closed:
                continue
            if entry is self.run[-1] and self.recorded_history is not None:
                # ComfyUI writes the history as it sends the end: only then is the prompt in /history.
                self.entry = json.loads(self._rewrite(json.dumps(self.recorded_history)))
            if entry["kind"] == "ws":
                await asyncio.get_running_loop().run_in_executor(None, self.before, entry["msg"])
                await socket.send_str(self._rewrite(json.dumps(entry["msg"])))
            else:
                await socket.send_bytes(self._binary(entry))
                await asyncio.sleep(self.after_preview)

    def _binary(self, entry: dict[str, Any]) -> bytes:
        frame = base64.b64decode(entry["b64"])
        if entry["event_type"] != 4:
            return frame
        (length,) = struct.unpack(">I", frame[4:8])
        metadata = self._rewrite(frame[8 : 8 + length].decode()).encode()
        return struct.pack(">II", 4, len(metadata)) + metadata + frame[8 + length :]


def recorded_messages(run: list[dict[str, Any]], prompt_id: str) -> list[dict[str, Any]]:
    """What ComfyUI told the client of `prompt_id` in a run: its own messages (and the `executing` it
    resends without a prompt id after a reconnect), and each `status`."""
    told = []
    for e in run:
        if e["kind"] == "ws_binary":
            told.append({"type": "preview", "data": {"b64": e["b64"]}})
            continue
        message = e["msg"]
        data = message.get("data") or {}
        resent = message["type"] == "executing" and "prompt_id" not in data  # after a reconnect
        if message["type"] == "status" or data.get("prompt_id") == prompt_id or resent:
            told.append(message)
    return told
