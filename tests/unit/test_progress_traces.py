"""Replaying the recorded ComfyUI traffic through the progress logic."""

from __future__ import annotations

from typing import Any

import pytest

from comfyui import WsMessage
from jobs.progress import JobProgress
from tests.conftest import load_trace

DISPLAY_NAMES = {"EmptyImage": "EmptyImage", "TestSleep": "Test Sleep", "SaveImage": "Save Image"}
OUTPUT_CLASSES = {"SaveImage"}


def prompts(trace: list[dict[str, Any]]) -> list[tuple[str, dict]]:
    """(prompt_id, workflow) of each accepted POST /prompt in the trace."""
    recorded_in_history = {}
    for entry in trace:
        if entry["kind"] == "http" and entry["path"].startswith("/history/") and entry["response"]:
            for prompt_id, item in entry["response"].items():
                recorded_in_history[prompt_id] = item["prompt"][2]
    found = []
    for entry in trace:
        if entry["kind"] == "http" and entry["path"] == "/prompt" and entry["status"] == 200:
            prompt_id = entry["response"]["prompt_id"]
            workflow = (entry.get("request") or {}).get("prompt") or recorded_in_history[prompt_id]
            found.append((prompt_id, workflow))
    return found


def replay(trace_name: str, index: int = 0, workflow: dict | None = None):
    trace = load_trace(trace_name)
    prompt_id, recorded = prompts(trace)[index] if prompts(trace) else (None, None)
    assert prompt_id is not None and (workflow or recorded) is not None, f"{trace_name} has no prompt"
    progress = JobProgress(
        prompt_id=prompt_id,
        workflow=workflow or recorded or {},
        display_names=DISPLAY_NAMES,
        output_classes=OUTPUT_CLASSES,
    )
    history: list[dict] = []
    for entry in trace:
        if entry["kind"] != "ws":
            continue
        message = WsMessage(type=entry["msg"]["type"], data=entry["msg"].get("data") or {})
        if progress.apply(message):
            history.append(
                {
                    "type": message.type,
                    "node": progress.current_node,
                    "name": progress.current_name,
                    "fraction": progress.fraction,
                    "step": (progress.step_value, progress.step_max),
                }
            )
    return progress, history


def test_success_trace_follows_nodes_with_display_names_and_ends_at_100():
    progress, history = replay("success.jsonl")
    nodes = [h["node"] for h in history if h["type"] == "executing"]
    assert nodes[:3] == ["1", "2", "3"]
    names = {h["node"]: h["name"] for h in history if h["node"]}
    assert names["2"] == "Test Sleep"
    steps = [h["step"] for h in history if h["type"] == "progress"]
    assert len(steps) > 100 and steps[-1][1] == 1.5
    fractions = [h["fraction"] for h in history]
    assert fractions == sorted(fractions), "overall progress moved backwards"
    success_at = next(i for i, h in enumerate(history) if h["type"] == "execution_success")
    assert all(f < 1.0 for f in fractions[:success_at]), "100% before ComfyUI said success"
    assert fractions[success_at] == 1.0
    assert progress.outcome == "success" and progress.fraction == 1.0 and progress.ended
    assert progress.outputs["3"]["images"][0]["filename"] == "trace_00001_.png"


def test_cached_rerun_counts_every_node_done_without_running_any():
    progress, history = replay("cached.jsonl", index=1)
    assert progress.cached == {"1", "2", "3"}
    assert not [h for h in history if h["type"] == "executing" and h["node"]]
    assert progress.nodes_done == 3 == progress.nodes_total
    assert progress.fraction == 1.0 and progress.outcome == "success"


def test_first_run_in_cached_trace_ignores_the_second_prompt():
    progress, _ = replay("cached.jsonl", index=0)
    assert progress.cached == set()
    assert progress.outcome == "success"


def test_expansion_shows_the_display_node_not_inner_ids():
    progress, history = replay("expansion.jsonl")
    current_nodes = {h["node"] for h in history if h["node"]}
    assert "4" in current_nodes
    assert not any("." in node for node in current_nodes)
    fractions = [h["fraction"] for h in history]
    assert fractions == sorted(fractions)
    assert progress.fraction == 1.0


def test_reconnect_executing_without_prompt_id_is_taken_as_ours():
    progress, history = replay("reconnect.jsonl")
    # The trace resends `executing {"node": "2"}` without a prompt_id after the reconnect.
    assert progress.outcome == "success"
    assert [h["node"] for h in history if h["type"] == "executing" and h["node"]] == ["1", "2", "3"]


@pytest.mark.parametrize(
    "trace,outcome", [("node_error.jsonl", "error"), ("oom.jsonl", "error"), ("interrupt.jsonl", "interrupted")]
)
def test_failed_runs_never_reach_100(trace, outcome):
    progress, _ = replay(trace)
    assert progress.outcome == outcome
    assert progress.fraction < 1.0
    assert progress.error["node_id"] == "2"


def test_messages_for_other_prompts_change_nothing():
    progress, _ = replay("success.jsonl", workflow=None)
    stranger = JobProgress(prompt_id="someone-else", workflow=progress.workflow)
    for entry in load_trace("success.jsonl"):
        if entry["kind"] == "ws":
            stranger.apply(WsMessage(type=entry["msg"]["type"], data=entry["msg"].get("data") or {}))
    assert stranger.current_node is None and stranger.outcome is None and stranger.fraction == 0.0
