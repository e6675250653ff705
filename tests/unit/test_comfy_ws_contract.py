"""Contract: what the front door's websocket tells a ComfyUI client is what ComfyUI itself sent.

Each recorded prompt (tests/data/comfyui-traces) is replayed by a fake ComfyUI that sends exactly the
recorded frames (tests/comfy_trace_replay.py) to the real tracker in this process, which turns them into
the job's timeline and its coalesced broadcasts as it does on a GPU worker. Each broadcast is handed, as
it is made, to the front door's stream for the prompt's clientId (comfy_api.ws_follow, what the consumer
runs), and what it sends is compared with what ComfyUI sent for the same prompt: message types in order,
node ids, cached nodes, outputs, error fields.

The documented differences, and only those, are allowed (comfy_api/ws_messages.py):
- runs of `progress`/`progress_state` (and previews) compare as one item: the tracker coalesces them;
  every progress value the front door sends is one ComfyUI reported for that node, never a made-up one;
- a node that expands into a subgraph is told as its one node (ComfyUI's inner `executing` are dropped),
  and the `executing` ComfyUI resends without prompt_id after a reconnect is not repeated;
- `executed` names the project's files (same keys and counts, not ComfyUI's names);
- `exception_message` is compared without surrounding whitespace, `traceback` as its last lines;
- `status` is the caller's own queue: compared only where it ends a prompt, before `executing` null.
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from django.utils import timezone

from comfy_api.models import FrontDoorPrompt
from comfy_api.ws_follow import ClientStream
from comfy_api.ws_messages import TRACEBACK_MAX_LINES
from jobs import services
from jobs.broadcast import job_state_message
from jobs.models import Job, JobStatus
from jobs.tracking import job_track
from tests.comfy_trace_replay import TraceComfyUI, prompt_run, recorded_messages, trace_prompts, trace_workflow
from tests.conftest import load_trace
from tests.factories import JobFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

CLIENT_ID = "comfy-client-1"
PROMPT_ID = "the-clients-own-prompt-id"
RUNS = "progress*"
# The recorded sampler's steps are 50 ms apart: all of them can fall between two of the tracker's
# broadcasts, and then no preview is told at all (rightly). Each preview is held this long more.
PREVIEW_PACE = 0.3


class Replayed:
    def __init__(self, trace_name: str, index: int, frames: list[Any], job: Job, recorded_id: str) -> None:
        trace = load_trace(trace_name)
        self.recorded = recorded_messages(prompt_run(trace, recorded_id), recorded_id)
        self.told = [frame if isinstance(frame, dict) else binary(frame) for frame in frames]
        self.job = job


def binary(frame: bytes) -> dict[str, Any]:
    event_type, second = struct.unpack(">II", frame[:8])
    if event_type == 4:  # 4-byte metadata length, the JSON metadata, the image
        metadata = json.loads(frame[8 : 8 + second])
        return {"type": "preview", "data": {"event_type": 4, "metadata": metadata, "image": frame[8 + second :]}}
    return {"type": "preview", "data": {"event_type": event_type, "image_type": second, "image": frame[8:]}}


def replay(
    trace_name: str,
    settings: Any,
    tmp_path: Path,
    *,
    index: int = 0,
    cancel_at: str = "",
    preview_metadata: bool = False,
    after_preview: float = 0.0,
) -> Replayed:
    """The recorded prompt through the tracker, and what the front door told the client meanwhile."""
    trace = load_trace(trace_name)
    recorded_id = trace_prompts(trace)[index]
    fake = TraceComfyUI(trace, recorded_id).start()
    fake.after_preview = after_preview
    settings.COMFYUI_BACKENDS = {"default": fake.url}
    settings.MEDIA_ROOT = tmp_path / "media"
    user = UserFactory.create()
    job = JobFactory.create(user=user, workflow=trace_workflow(trace, recorded_id))
    FrontDoorPrompt.objects.create(job=job, user=user, client_id=CLIENT_ID, prompt_id=PROMPT_ID, number=1)
    if cancel_at:

        def cancel(message: dict[str, Any]) -> None:
            # The client's POST /interrupt, as ComfyUI received it just before it stopped the prompt.
            if message["type"] == cancel_at:
                Job.objects.filter(pk=job.pk).update(cancel_requested_at=timezone.now())

        fake.before = cancel
    stream = ClientStream(user, CLIENT_ID)
    stream.preview_metadata = preview_metadata  # the client sent ComfyUI's feature_flags asking for it
    frames: list[Any] = list(stream.opening())

    def delivered(state: dict[str, Any], user_id: int | None, events: Any = (), **_: Any) -> None:
        # What the channel layer carries, decoded as the consumer decodes it.
        message = job_state_message(state, events)
        state_sent, events_sent = json.loads(message["state_json"]), json.loads(message["events_json"])
        frames.extend(stream.deliver(message["id"], state_sent, events_sent))

    try:
        with mock.patch.object(services, "job_broadcast", delivered):
            job_track(str(job.id))
    finally:
        fake.stop()
    job.refresh_from_db()
    return Replayed(trace_name, index, frames, job, recorded_id)


# --- the comparison -----------------------------------------------------------------------------------


def projection(messages: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Message types in order with the values a client keys on, the documented differences removed."""
    items: list[tuple[Any, ...]] = []
    last_node: Any = object()
    for message in messages:
        kind, data = message["type"], message.get("data") or {}
        if kind == "status":
            continue
        if kind == "executing":
            node = data.get("node")
            if node is not None and node != data.get("display_node", node):
                continue  # inside an expanded node
            if node is not None and node == last_node:
                continue  # resent after a reconnect
            last_node = node
            items.append(("executing", node))
        elif kind in ("progress", "progress_state", "preview"):
            if not items or items[-1] != (RUNS,):
                items.append((RUNS,))
        elif kind == "execution_cached":
            items.append((kind, tuple(data["nodes"])))
        elif kind == "executed":
            shape = tuple(sorted((key, len(value)) for key, value in data["output"].items()))
            items.append((kind, data["node"], data["display_node"], shape))
        elif kind == "execution_error":
            items.append(
                (
                    kind,
                    data["node_id"],
                    data["node_type"],
                    data["exception_type"],
                    data["exception_message"].strip(),
                    tuple(data["executed"]),
                    tuple(data["traceback"][-TRACEBACK_MAX_LINES:]),
                )
            )
        elif kind == "execution_interrupted":
            items.append((kind, data["node_id"], data["node_type"], tuple(data["executed"])))
        else:
            items.append((kind,))
    return items


def progress_values(messages: list[dict[str, Any]]) -> set[tuple[str, float, float]]:
    """(node, value, max) of each `progress`, by the node the client submitted (an expanded node's
    inner nodes report as "4.0.0.1": the front door tells them as "4")."""
    return {
        (str(m["data"]["node"]).split(".")[0], float(m["data"]["value"]), float(m["data"]["max"]))
        for m in messages
        if m["type"] == "progress"
    }


def assert_told_as_comfyui(run: Replayed) -> None:
    told = [m for m in run.told if m["type"] != "preview"]
    assert projection(run.told) == projection(run.recorded)
    # Never made up: each progress value told is one ComfyUI reported for that node.
    assert progress_values(told) <= progress_values(run.recorded)
    # The client's own prompt id, never the job's.
    ids = {m["data"]["prompt_id"] for m in told if "prompt_id" in m["data"]}
    assert ids == {PROMPT_ID}
    # The end as ComfyUI tells it: the caller's queue, then `executing` null.
    assert [m["type"] for m in told[-2:]] == ["status", "executing"]
    assert told[-1]["data"] == {"node": None, "prompt_id": PROMPT_ID}
    assert told[-2]["data"] == {"status": {"exec_info": {"queue_remaining": 0}}}


# --- the scenarios ------------------------------------------------------------------------------------


def test_a_prompt_that_runs_is_told_node_by_node_with_its_output(settings: Any, tmp_path: Path) -> None:
    run = replay("success.jsonl", settings, tmp_path)
    assert run.job.status == JobStatus.COMPLETED
    assert_told_as_comfyui(run)
    # The sampler-like node's progress was told as it ran (coalesced), ending on its last step.
    steps = [m["data"]["value"] for m in run.told if m["type"] == "progress"]
    assert len(steps) >= 3 and steps == sorted(steps)
    # The first message is the caller's queue with the socket's clientId, as ComfyUI's first.
    assert run.told[0] == {
        "type": "status",
        "data": {"status": {"exec_info": {"queue_remaining": 1}}, "sid": CLIENT_ID},
    }
    executed = next(m for m in run.told if m["type"] == "executed")
    (image,) = executed["data"]["output"]["images"]
    output = run.job.outputs.get()
    assert image == {"filename": Path(output.file.name or "").name, "subfolder": str(run.job.id), "type": "output"}


def test_a_prompt_served_from_cache_is_told_its_cached_nodes_and_outputs(settings: Any, tmp_path: Path) -> None:
    run = replay("cached.jsonl", settings, tmp_path, index=1)
    assert run.job.status == JobStatus.COMPLETED
    assert_told_as_comfyui(run)
    assert ("execution_cached", ("1", "2", "3")) in projection(run.told)


@pytest.mark.parametrize("trace_name", ["node_error.jsonl", "oom.jsonl"])
def test_a_node_that_raises_is_told_as_comfyuis_execution_error(trace_name: str, settings: Any, tmp_path: Path) -> None:
    settings.JOB_RETRY_LIMITS = {}  # an out-of-memory failure is retried once by default: here it ends the prompt
    run = replay(trace_name, settings, tmp_path)
    assert run.job.status == JobStatus.FAILED
    assert_told_as_comfyui(run)
    error = next(m["data"] for m in run.told if m["type"] == "execution_error")
    assert set(error) >= {
        "node_id",
        "node_type",
        "exception_message",
        "exception_type",
        "traceback",
        "executed",
        "current_inputs",
        "current_outputs",
    }


def test_an_interrupted_prompt_is_told_as_comfyuis_interruption(settings: Any, tmp_path: Path) -> None:
    run = replay("interrupt.jsonl", settings, tmp_path, cancel_at="execution_interrupted")
    assert run.job.status == JobStatus.CANCELLED
    assert_told_as_comfyui(run)


def test_an_expanded_node_is_told_as_the_node_the_client_submitted(settings: Any, tmp_path: Path) -> None:
    run = replay("expansion.jsonl", settings, tmp_path)
    assert run.job.status == JobStatus.COMPLETED
    assert_told_as_comfyui(run)
    nodes = [m["data"]["node"] for m in run.told if m["type"] == "executing" and m["data"]["node"]]
    assert nodes == ["3", "2", "1", "4", "5"]


def test_a_reconnect_between_comfyui_and_the_tracker_loses_nothing(settings: Any, tmp_path: Path) -> None:
    run = replay("reconnect.jsonl", settings, tmp_path)
    assert run.job.status == JobStatus.COMPLETED
    assert_told_as_comfyui(run)


def test_previews_are_comfyuis_binary_frames_with_the_samplers_own_images(settings: Any, tmp_path: Path) -> None:
    run = replay("preview.jsonl", settings, tmp_path, after_preview=PREVIEW_PACE)
    assert_told_as_comfyui(run)
    previews = [m["data"] for m in run.told if m["type"] == "preview"]
    assert previews, "a preview was told while the sampler ran"
    recorded = {base64.b64decode(m["data"]["b64"])[8:] for m in run.recorded if m["type"] == "preview"}
    for preview in previews:
        assert (preview["event_type"], preview["image_type"]) == (1, 1)  # PREVIEW_IMAGE, JPEG
        assert preview["image"] in recorded


def test_a_client_that_asks_for_preview_metadata_gets_comfyuis_type_4_frames(settings: Any, tmp_path: Path) -> None:
    run = replay("preview_metadata.jsonl", settings, tmp_path, preview_metadata=True, after_preview=PREVIEW_PACE)
    assert_told_as_comfyui(run)
    previews = [m["data"] for m in run.told if m["type"] == "preview"]
    assert previews, "a preview was told while the sampler ran"
    recorded = [binary(base64.b64decode(m["data"]["b64"]))["data"] for m in run.recorded if m["type"] == "preview"]
    assert all(r["event_type"] == 4 for r in recorded)
    for preview in previews:
        assert preview["event_type"] == 4 and preview["image"] in {r["image"] for r in recorded}
        # ComfyUI's metadata keys, naming the client's prompt id and node.
        assert set(preview["metadata"]) == set(recorded[0]["metadata"])
        assert preview["metadata"]["prompt_id"] == PROMPT_ID and preview["metadata"]["node_id"] == "2"
        assert preview["metadata"]["image_type"] == "image/jpeg"
