"""The translation of a job's timeline into ComfyUI's websocket messages, in the cases the recorded
traces do not show (tests/unit/test_comfy_ws_contract.py compares the ones they do): a retried
attempt, a job that failed outside any node, a prompt deleted while it waited, a late socket, a
traceback that would not fit, previews as ComfyUI's binary frames."""

from __future__ import annotations

import json
import struct
from typing import Any

from comfy_api.ws_follow import follows_on, preview_place
from comfy_api.ws_messages import TRACEBACK_MAX_LINES, PromptMessages, preview_frame

AT = "2026-12-05T08:00:00+00:00"


def event(seq: int, kind: str, node: str = "", **data: Any) -> dict[str, Any]:
    return {"seq": seq, "kind": kind, "at": AT, "node_id": node, "data": data}


def state(status: str, seq: int, **fields: Any) -> dict[str, Any]:
    return {"status": status, "seq": seq, "current_node": None, "step": None, "error": None, **fields}


def kinds(messages: list[dict[str, Any]]) -> list[str]:
    return [m["type"] for m in messages]


def test_a_retried_attempt_runs_again_from_its_start_and_ends_once() -> None:
    prompt = PromptMessages(prompt_id="p")
    first = prompt.feed(
        [event(1, "status", to="running"), event(2, "node_started", "1", class_type="A")], state("running", 2)
    )
    assert kinds(first) == ["execution_start", "execution_cached", "progress_state", "executing"]
    # ComfyUI went away mid-run; the job is queued again as a new attempt, then runs and completes.
    again = prompt.feed(
        [
            event(3, "status", to="queued"),
            event(4, "status", to="submitted"),
            event(5, "status", to="running"),
            event(6, "node_started", "1", class_type="A"),
            event(7, "node_finished", "1"),
            event(8, "status", to="completed"),
        ],
        state("completed", 8),
        outputs={},
        queue_remaining=0,
    )
    assert kinds(again) == [
        "execution_start",
        "execution_cached",
        "progress_state",
        "executing",
        "progress_state",
        "execution_success",
        "status",
        "executing",
    ]
    assert again[-1]["data"] == {"node": None, "prompt_id": "p"}
    assert prompt.feed([event(9, "note", message="late")], state("completed", 9)) == []


def test_a_job_that_failed_outside_a_node_ends_with_an_execution_error_naming_the_category() -> None:
    prompt = PromptMessages(prompt_id="p")
    error = {"category": "comfyui_unreachable", "message": "ComfyUI at gpu-3 refused the connection", "details": {}}
    told = prompt.feed(
        [event(1, "status", to="submitted"), event(2, "status", to="failed")],
        state("failed", 2, error=error),
        queue_remaining=2,
    )
    assert kinds(told) == ["execution_error", "status", "executing"]
    failure = told[0]["data"]
    assert failure["exception_type"] == "comfyui_unreachable"
    assert failure["exception_message"] == "ComfyUI at gpu-3 refused the connection"
    assert failure["node_id"] is None and failure["traceback"] == [] and failure["executed"] == []
    assert told[1]["data"]["status"]["exec_info"]["queue_remaining"] == 2


def test_someone_elses_interrupt_is_told_as_comfyuis_interruption() -> None:
    prompt = PromptMessages(prompt_id="p")
    error = {"category": "interrupted", "message": "interrupted", "details": {"node_id": "2", "node_type": "KSampler"}}
    told = prompt.feed(
        [
            event(1, "status", to="running"),
            event(2, "node_started", "1", class_type="Loader"),
            event(3, "node_finished", "1"),
            event(4, "node_started", "2", class_type="KSampler"),
            event(5, "node_finished", "2"),
            event(6, "status", to="failed"),
        ],
        state("failed", 6, error=error),
    )
    interrupted = next(m["data"] for m in told if m["type"] == "execution_interrupted")
    assert (interrupted["node_id"], interrupted["node_type"], interrupted["executed"]) == ("2", "KSampler", ["1"])


def test_a_prompt_deleted_while_it_waited_vanishes_leaving_only_the_queue() -> None:
    prompt = PromptMessages(prompt_id="p")
    told = prompt.feed([event(1, "status", to="cancelled")], state("cancelled", 1), queue_remaining=3)
    assert told == [{"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 3}}}}]
    assert prompt.ended


def test_a_traceback_is_kept_to_its_last_lines_each_bounded() -> None:
    prompt = PromptMessages(prompt_id="p")
    lines = [f"line {n}\n" for n in range(500)] + ["x" * 100_000]
    details = {"node_id": "2", "node_type": "N", "exception_type": "E", "exception_message": "m", "traceback": lines}
    told = prompt.feed(
        [event(1, "status", to="failed")], state("failed", 1, error={"category": "node_error", "details": details})
    )
    traceback = told[0]["data"]["traceback"]
    assert len(traceback) == TRACEBACK_MAX_LINES and traceback[-2] == "line 499\n"
    assert len(json.dumps(told)) < 10_000


def test_steps_are_the_latest_the_live_state_holds_never_older_and_never_repeated() -> None:
    prompt = PromptMessages(prompt_id="p")
    prompt.feed(
        [event(1, "status", to="running"), event(2, "node_started", "3", class_type="KSampler")], state("running", 2)
    )
    running = {"id": "3", "class_type": "KSampler"}
    told = prompt.feed([], state("running", 2, current_node=running, step={"value": 4, "max": 20}))
    assert kinds(told) == ["progress_state", "progress"]
    assert told[1]["data"] == {"value": 4, "max": 20, "prompt_id": "p", "node": "3"}
    assert prompt.feed([], state("running", 2, current_node=running, step={"value": 4, "max": 20})) == []
    # A state older than what the timeline already told (read after a gap) says nothing about steps.
    prompt.feed([event(3, "steps", "3", value=9, max=20)], state("running", 3))
    assert prompt.feed([], state("running", 2, current_node=running, step={"value": 6, "max": 20})) == []
    # A timeline sample stored after the live state told a later step of the same bar says nothing.
    prompt.feed([], state("running", 3, current_node=running, step={"value": 12, "max": 20}))
    assert prompt.feed([event(4, "steps", "3", value=11, max=20)], state("running", 4)) == []
    # A state whose node the timeline has not told yet (it runs ahead by up to a write) waits.
    ahead = {"id": "4", "class_type": "VAEDecode"}
    assert prompt.feed([], state("running", 3, current_node=ahead, step={"value": 1, "max": 2})) == []


def test_a_late_socket_gets_the_run_so_far_then_only_what_is_new() -> None:
    prompt = PromptMessages(prompt_id="p")
    running = state(
        "running",
        7,
        started_at=AT,
        cached_nodes=["1"],
        current_node={"id": "3", "class_type": "KSampler"},
        step={"value": 5, "max": 20},
    )
    told = prompt.resume(running, finished=["2"])
    assert kinds(told) == [
        "execution_start",
        "execution_cached",
        "progress_state",
        "executing",
        "progress_state",
        "progress",
    ]
    assert told[1]["data"]["nodes"] == ["1"]
    assert told[2]["data"]["nodes"]["2"]["state"] == "finished" and told[2]["data"]["nodes"]["3"]["state"] == "running"
    assert prompt.feed([event(7, "steps", "3", value=5, max=20)], running) == []  # already told


def test_previews_are_comfyuis_binary_frames() -> None:
    jpeg = b"\xff\xd8\xff\xe0fake"
    assert preview_frame(jpeg, "image/jpeg") == struct.pack(">II", 1, 1) + jpeg
    assert preview_frame(b"\x89PNG", "image/png") == struct.pack(">II", 1, 2) + b"\x89PNG"
    assert preview_frame(b"RIFF", "image/webp") is None  # type 1 has no code for it
    framed = preview_frame(jpeg, "image/jpeg", {"node_id": "3", "prompt_id": "p"})
    assert framed is not None
    event_type, length = struct.unpack(">II", framed[:8])
    metadata = json.loads(framed[8 : 8 + length])
    assert event_type == 4 and metadata == {"node_id": "3", "prompt_id": "p", "image_type": "image/jpeg"}
    assert framed[8 + length :] == jpeg


def test_a_preview_goes_after_its_nodes_progress_and_before_the_next_node() -> None:
    frames: list[Any] = [
        {"type": "executing", "data": {"node": "2"}},
        {"type": "progress_state", "data": {}},
        {"type": "progress", "data": {"node": "2"}},
        {"type": "progress_state", "data": {}},
        {"type": "executing", "data": {"node": "3"}},
    ]
    assert preview_place(frames, "2") == 3
    assert preview_place(frames, "3") == 5
    assert preview_place(frames, "9") is None


def test_a_broadcast_follows_on_only_without_a_gap_up_to_its_state() -> None:
    assert follows_on([{"seq": 5}, {"seq": 6}], 4, {"seq": 6})
    assert not follows_on([{"seq": 6}], 4, {"seq": 6})  # event 5 was never broadcast
    assert not follows_on([], 4, {"seq": 5})  # the state knows of an event that was not sent
    assert follows_on([], 4, {"seq": 4})
