"""The simulator against recorded ComfyUI 0.8.0 traffic (tests/data/comfyui-traces/*.jsonl).

Each test replays one trace's client actions (submit, interrupt, queue delete, reconnect, feature
flags, kill and restart) on a fresh simulator, records what comes back in the traces'
format, and compares three projections of both recordings:

- the websocket stream: message types in order, each with the key structure of its data and the
  values a client keys on (node ids of `executing`/`executed`, cached node lists, error types and
  messages); runs of progress / progress_state / preview frames collapse into one item that keeps
  the kinds in first-seen order, their shapes and the progressing node ids; a `status` broadcast
  that lands inside such a run (caused by a client's HTTP call mid-run) only counts in:
- the `status` sequence: queue_remaining of every status message, in order;
- the client's side: HTTP exchanges (method, path, status code, response key structure; error
  and text bodies compared whole) and socket/process events, in the order the client made them.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from devtools.simulator_process import SimulatorClient, SimulatorProcess
from tests.conftest import TRACES_DIR

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# Maps keyed by node ids ("3", "4.0.0.1") or prompt ids are compared by their values' shape only.
_ID_KEY = re.compile(rf"^(\d+(\.\d+)*|{_UUID})$")
_PROGRESS_TYPES = ("progress", "progress_state")
_SOCKET_EVENTS = ("ws_error", "ws_closed_by_client", "ws_reconnected")
_CLIENT_EVENTS = ("ws_closed_by_client", "ws_reconnected", "comfyui_killed", "comfyui_restarted", "comfyui_ready")

Events = list[dict[str, Any]]


# --- normalising a recording ----------------------------------------------------------------------


def shape(value: Any) -> Any:
    """The key structure of a JSON value, recursively; scalars are all alike."""
    if isinstance(value, dict):
        if value and all(_ID_KEY.match(key) for key in value):
            return ("id-map", _union(value.values()))
        return ("dict", tuple(sorted((key, shape(item)) for key, item in value.items())))
    if isinstance(value, list):
        return ("list", _union(value))
    return "scalar"


def _union(values: Any) -> tuple[Any, ...]:
    return tuple(sorted({shape(value) for value in values}, key=repr))


def significant_values(message_type: str, data: dict[str, Any]) -> tuple[Any, ...]:
    """Values of a message that must match the trace, not just its keys."""
    if message_type in ("executing", "executed"):
        return (data.get("node"), data.get("display_node"))
    if message_type == "execution_cached":
        return tuple(data["nodes"])
    if message_type == "execution_error":
        executed = tuple(sorted(data["executed"]))
        return (data["node_id"], data["node_type"], data["exception_type"], data["exception_message"], executed)
    if message_type == "execution_interrupted":
        return (data["node_id"], data["node_type"], tuple(sorted(data["executed"])))
    if message_type == "feature_flags":
        return (json.dumps(data, sort_keys=True),)
    return ()


@dataclass
class _Item:
    category: str  # "progress", "status", "message" or "socket"
    token: tuple[Any, ...]
    node: str | None = None


def _ws_items(events: Events) -> list[_Item]:
    items = []
    for event in events:
        if event["kind"] == "ws":
            message_type, data = event["msg"]["type"], event["msg"]["data"]
            if message_type in _PROGRESS_TYPES:
                node = data.get("node") if message_type == "progress" else None
                items.append(_Item("progress", (message_type, shape(data)), node))
            elif message_type == "status":
                items.append(_Item("status", ("status", shape(data))))
            else:
                items.append(_Item("message", (message_type, shape(data), significant_values(message_type, data))))
        elif event["kind"] == "ws_binary":
            if event["event_type"] == 4:
                detail: Any = tuple(sorted(event["metadata"]))
            else:
                detail = event.get("image_type")
            items.append(_Item("progress", (f"binary{event['event_type']}", detail)))
        elif event["kind"] in _SOCKET_EVENTS:
            items.append(_Item("socket", (event["kind"],)))
    return items


def _inside_progress_run(items: list[_Item], index: int) -> bool:
    before = next((item for item in reversed(items[:index]) if item.category != "status"), None)
    after = next((item for item in items[index + 1 :] if item.category != "status"), None)
    return before is not None and after is not None and before.category == after.category == "progress"


def websocket_stream(events: Events, drop_progress: bool = False) -> list[tuple[Any, ...]]:
    items = _ws_items(events)
    stream: list[tuple[Any, ...]] = []
    run: dict[str, Any] | None = None
    for index, item in enumerate(items):
        if item.category == "status" and _inside_progress_run(items, index):
            continue
        if item.category == "progress":
            if drop_progress:
                continue
            if run is None:
                run = {"kinds": [], "shapes": set(), "nodes": set()}
                stream.append(("progress run", run))
            if item.token[0] not in run["kinds"]:
                run["kinds"].append(item.token[0])
            run["shapes"].add(item.token)
            if item.node is not None:
                run["nodes"].add(item.node)
            continue
        run = None
        stream.append(item.token)
    return [_freeze_run(entry) for entry in stream]


def _freeze_run(entry: tuple[Any, ...]) -> tuple[Any, ...]:
    if entry[0] != "progress run":
        return entry
    run = entry[1]
    return ("progress run", tuple(run["kinds"]), tuple(sorted(run["shapes"], key=repr)), tuple(sorted(run["nodes"])))


def status_stream(events: Events) -> list[tuple[bool, int]]:
    return [
        ("sid" in e["msg"]["data"], e["msg"]["data"]["status"]["exec_info"]["queue_remaining"])
        for e in events
        if e["kind"] == "ws" and e["msg"]["type"] == "status"
    ]


def _path_template(path: str) -> str:
    return re.sub(_UUID, "{id}", path)


def client_actions(events: Events) -> list[tuple[Any, ...]]:
    actions: list[tuple[Any, ...]] = []
    for event in events:
        kind = event["kind"]
        if kind == "http":
            response = event["response"]
            if isinstance(response, str) or event["status"] >= 400:
                body: tuple[Any, ...] = ("body", json.dumps(response, sort_keys=True))
            else:
                body = ("shape", shape(response))
            actions.append(("http", event["method"], _path_template(event["path"]), event["status"], body))
        elif kind == "http_error":
            actions.append(("http_error", event["method"], _path_template(event["path"])))
        elif kind == "ws_sent":
            actions.append(("ws_sent", event["msg"]["type"], json.dumps(event["msg"]["data"], sort_keys=True)))
        elif kind in _CLIENT_EVENTS:
            actions.append((kind,))
    return actions


def assert_same(actual: Sequence[Any], expected: Sequence[Any], what: str) -> None:
    if list(actual) == list(expected):
        return
    diff = difflib.unified_diff(
        [repr(x)[:400] for x in expected], [repr(x)[:400] for x in actual], "trace", "simulator", lineterm=""
    )
    pytest.fail(f"{what} differ from the ComfyUI trace:\n" + "\n".join(diff))


# --- replaying a trace's client actions ---------------------------------------------------------


@dataclass
class Trace:
    name: str
    events: Events

    @classmethod
    def load(cls, name: str) -> Trace:
        path = TRACES_DIR / f"{name}.jsonl"
        if not path.exists():
            pytest.fail(f"trace {path} is missing: the recorded traces live in tests/data/comfyui-traces")
        return cls(name, [json.loads(line) for line in path.read_text().splitlines() if line.strip()])

    def prompt_posts(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["kind"] == "http" and e["method"] == "POST" and e["path"] == "/prompt"]

    def prompt_requests(self) -> list[dict[str, Any] | None]:
        return [copy.deepcopy(e.get("request")) for e in self.prompt_posts()]

    def submitted_prompt(self, prompt_id: str) -> dict[str, Any]:
        """A prompt whose request was not recorded, read back from its /history answer."""
        for event in self.events:
            if event["kind"] == "http" and event["path"] == f"/history/{prompt_id}" and event["response"]:
                return copy.deepcopy(event["response"][prompt_id]["prompt"][2])
        raise LookupError(prompt_id)


def replay_runs_and_reads(trace: Trace, client: SimulatorClient, reads: Sequence[str]) -> None:
    """Submit each recorded prompt, wait for it to end, then make the recorded GETs."""
    prompt_id = ""
    for request in trace.prompt_requests():
        assert request is not None
        prompt_id = client.submit(request)
        client.wait_finished(prompt_id)
    for path in reads:
        client.http("GET", path.format(id=prompt_id))


def replay_success(trace: Trace, client: SimulatorClient) -> None:
    client.connect()
    replay_runs_and_reads(trace, client, ["/history/{id}", "/api/jobs/{id}", "/queue"])


def replay_cached(trace: Trace, client: SimulatorClient) -> None:
    client.connect()
    replay_runs_and_reads(trace, client, ["/history/{id}"])


def replay_node_error(trace: Trace, client: SimulatorClient) -> None:
    client.connect()
    replay_runs_and_reads(trace, client, ["/history/{id}", "/api/jobs/{id}"])


def replay_oom(trace: Trace, client: SimulatorClient) -> None:
    client.connect()
    replay_runs_and_reads(trace, client, ["/history/{id}"])


def replay_expansion(trace: Trace, client: SimulatorClient) -> None:
    client.connect()
    replay_runs_and_reads(trace, client, ["/history/{id}"])


def replay_preview(trace: Trace, client: SimulatorClient) -> None:
    client.connect()
    replay_runs_and_reads(trace, client, [])


def replay_preview_metadata(trace: Trace, client: SimulatorClient) -> None:
    client.connect()
    client.negotiate_preview_metadata()
    replay_runs_and_reads(trace, client, [])


def replay_rejected_posts(trace: Trace, client: SimulatorClient) -> None:
    client.connect()
    for request in trace.prompt_requests():
        if request is None:
            client.http("POST", "/prompt", raw=b"this is not json{")
        else:
            client.http("POST", "/prompt", {**request, "client_id": client.client_id})


def replay_interrupt(trace: Trace, client: SimulatorClient) -> None:
    client.connect()
    (request,) = trace.prompt_requests()
    assert request is not None
    prompt_id = client.submit(request)
    client.wait_progress(prompt_id, 10)
    client.http("POST", "/interrupt", {"prompt_id": prompt_id})
    client.wait_finished(prompt_id)
    client.http("GET", f"/history/{prompt_id}")


def replay_queue(trace: Trace, client: SimulatorClient) -> None:
    client.connect()
    first, second, third = trace.prompt_requests()
    assert first and second and third
    running = client.submit(first)
    client.wait_progress(running, 1)
    next_in_line = client.submit(second)
    deleted = client.submit(third)
    client.http("GET", "/queue")
    client.http("GET", "/api/jobs?status=pending,in_progress")
    client.http("POST", "/queue", {"delete": [deleted]})
    client.wait_finished(next_in_line)
    client.http("GET", f"/history/{deleted}")
    client.http("GET", "/history?max_items=2")


def replay_reconnect(trace: Trace, client: SimulatorClient) -> None:
    client.connect()
    prompt_id = trace.prompt_posts()[0]["response"]["prompt_id"]
    submitted = client.submit({"prompt": trace.submitted_prompt(prompt_id), "prompt_id": prompt_id})
    assert submitted == prompt_id
    client.wait_progress(prompt_id, 30)
    client.drop_socket()
    time.sleep(0.3)
    client.reconnect()
    client.wait_finished(prompt_id)
    client.http("GET", f"/history/{prompt_id}")


def replay_restart(trace: Trace, client: SimulatorClient) -> None:
    client.connect()
    (request,) = trace.prompt_requests()
    assert request is not None
    prompt_id = client.submit(request)
    client.wait_progress(prompt_id, 20)
    # kill() and start() rather than restart(): the recorded client called ComfyUI while it was down.
    client.log.append("comfyui_killed")
    client.sim.kill()
    client.log.wait_for(lambda event: event["kind"] == "ws_error")
    client.http("GET", "/queue")
    client.log.append("comfyui_restarted")
    client.sim.start()
    client.log.append("comfyui_ready")
    client.reconnect()
    client.http("GET", "/queue")
    client.http("GET", f"/history/{prompt_id}")
    client.http("GET", f"/api/jobs/{prompt_id}")


@dataclass(frozen=True)
class Scenario:
    replay: Callable[[Trace, SimulatorClient], None]
    simulator_args: tuple[str, ...] = ()
    # restart.jsonl kept only every 25th progress message, so progress cannot be compared there.
    drop_progress: bool = False


SCENARIOS: dict[str, Scenario] = {
    "success": Scenario(replay_success),
    "cached": Scenario(replay_cached),
    "node_error": Scenario(replay_node_error),
    "oom": Scenario(replay_oom),
    "validation_error": Scenario(replay_rejected_posts),
    # The recording ComfyUI had no checkpoints installed at all.
    "missing_model": Scenario(replay_rejected_posts, simulator_args=("--models", "")),
    "interrupt": Scenario(replay_interrupt),
    "queue": Scenario(replay_queue),
    "expansion": Scenario(replay_expansion),
    "preview": Scenario(replay_preview),
    "preview_metadata": Scenario(replay_preview_metadata),
    "restart": Scenario(replay_restart, drop_progress=True),
    "reconnect": Scenario(replay_reconnect),
}


def test_every_recorded_trace_is_replayed() -> None:
    recorded = {path.stem for path in TRACES_DIR.glob("*.jsonl")}
    assert recorded, f"no traces found in {TRACES_DIR}"
    assert recorded == set(SCENARIOS)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_simulator_matches_recorded_trace(name: str, comfyui_sim: SimulatorProcess) -> None:
    scenario = SCENARIOS[name]
    trace = Trace.load(name)
    if scenario.simulator_args:
        comfyui_sim.extra_args = list(scenario.simulator_args)
        comfyui_sim.restart()
    client = SimulatorClient(comfyui_sim)
    scenario.replay(trace, client)
    recorded = client.finish()

    assert_same(
        websocket_stream(recorded, scenario.drop_progress),
        websocket_stream(trace.events, scenario.drop_progress),
        "websocket messages",
    )
    assert_same(status_stream(recorded), status_stream(trace.events), "status broadcasts (queue_remaining)")
    assert_same(client_actions(recorded), client_actions(trace.events), "HTTP exchanges and client events")


# --- the comparison itself must be able to fail ----------------------------------------------------


def _trace_events(name: str) -> Events:
    return Trace.load(name).events


def test_comparison_notices_a_missing_message() -> None:
    events = _trace_events("success")
    without_success = [e for e in events if not (e["kind"] == "ws" and e["msg"]["type"] == "execution_success")]
    assert websocket_stream(without_success) != websocket_stream(events)


def test_comparison_notices_a_missing_key() -> None:
    events = copy.deepcopy(_trace_events("success"))
    for event in events:
        if event["kind"] == "ws" and event["msg"]["type"] == "progress_state":
            for node in event["msg"]["data"]["nodes"].values():
                node.pop("real_node_id")
    assert websocket_stream(events) != websocket_stream(_trace_events("success"))


def test_comparison_notices_progress_without_progress_state() -> None:
    events = _trace_events("success")
    thinned = [e for e in events if not (e["kind"] == "ws" and e["msg"]["type"] == "progress_state")]
    assert websocket_stream(thinned) != websocket_stream(events)


def test_comparison_notices_preview_frames_in_the_wrong_place() -> None:
    events = _trace_events("preview_metadata")
    reordered: Events = []
    held: dict[str, Any] | None = None
    for event in events:
        if event["kind"] == "ws_binary":
            held = event
            continue
        reordered.append(event)
        if held is not None and event["kind"] == "ws" and event["msg"]["type"] == "progress":
            reordered.append(held)
            held = None
    assert websocket_stream(reordered) != websocket_stream(events)


def test_comparison_notices_a_status_that_is_not_sent() -> None:
    events = _trace_events("queue")
    first_inner_status = next(
        i
        for i, e in enumerate(events)
        if e["kind"] == "ws"
        and e["msg"]["type"] == "status"
        and e["msg"]["data"]["status"]["exec_info"]["queue_remaining"] == 3
    )
    assert status_stream(events[:first_inner_status] + events[first_inner_status + 1 :]) != status_stream(events)


def test_comparison_notices_a_different_error_body() -> None:
    events = copy.deepcopy(_trace_events("validation_error"))
    rejected = next(e for e in events if e["kind"] == "http" and e["status"] == 400)
    rejected["response"]["error"]["type"] = "invalid_prompt"
    assert client_actions(events) != client_actions(_trace_events("validation_error"))
