"""The project's tracking of one prompt, told as ComfyUI's own websocket messages: pure, no I/O.

The tracker records what ComfyUI reported as the job's timeline (jobs.models.JobEvent: status,
node_started, node_finished, nodes_cached, steps, output, error) and its coalesced live state (the
latest node and step, at most ~8 broadcasts a second). `PromptMessages` turns that, in order, back
into what ComfyUI sends a client for its prompt, with the node ids the client submitted:

    execution_start, execution_cached, (progress_state, executing, progress...)*, executed*,
    progress_state, execution_success | execution_error | execution_interrupted, status, executing null

Differences from ComfyUI, by construction (and what the contract tests allow,
tests/unit/test_comfy_ws_contract.py):
- `progress` values are the latest the tracker saw at each broadcast (ComfyUI sends ~100 a second);
  a node that started and finished between two broadcasts still gets its `executing`, from the timeline.
- A node that expands into a subgraph is one node ("4"), never its inner ids ("4.0.0.3").
- `executed` comes for every output node once the job's outputs are stored, just before the end,
  with the project's file names (comfy_api.outputs): ComfyUI sends it as each output node finishes.
- `progress_state` carries the top-level nodes the timeline knows; none for cached nodes.
- A job that failed outside a node (ComfyUI unreachable, lost, a GPU that refused the prompt) ends
  with `execution_error` whose `exception_type` is the project's failure category.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

Message = dict[str, Any]

# Statuses (jobs.models.JobStatus), by value: this module reads payloads, not models.
RUNNING = "running"
QUEUED = "queued"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
FINAL = frozenset({COMPLETED, FAILED, CANCELLED})

# What an execution_error carries of a traceback: ComfyUI's untrusted text, bounded.
TRACEBACK_MAX_LINES = 20
TRACEBACK_LINE_MAX_CHARS = 2000
EXCEPTION_MESSAGE_MAX_CHARS = 4000
EXECUTED_MAX = 1000

# ComfyUI's binary frames (server.py BinaryEventTypes): a preview image, and one with JSON metadata.
PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
PREVIEW_IMAGE_TYPES = {"image/jpeg": 1, "image/png": 2}


def message(kind: str, data: Mapping[str, Any]) -> Message:
    return {"type": kind, "data": dict(data)}


def status_message(queue_remaining: int, *, sid: str | None = None) -> Message:
    """ComfyUI's `status`: the caller's queue (with the socket's client id on the first one, as ComfyUI)."""
    data: dict[str, Any] = {"status": {"exec_info": {"queue_remaining": queue_remaining}}}
    if sid is not None:
        data["sid"] = sid
    return message("status", data)


def timestamp_ms(at: str | datetime | None) -> int:
    """ComfyUI's `timestamp`: milliseconds since the epoch, of when the timeline recorded it."""
    if isinstance(at, str):
        try:
            at = datetime.fromisoformat(at)
        except ValueError:
            at = None
    return int(at.timestamp() * 1000) if isinstance(at, datetime) else 0


def preview_frame(image: bytes, media_type: str, metadata: Mapping[str, Any] | None = None) -> bytes | None:
    """A preview as ComfyUI's binary frame: type 1 (4-byte image type, then the image) or, for a client
    that asked for metadata (`feature_flags`), type 4 (4-byte length, the JSON metadata, the image).
    None for an image type ComfyUI's type 1 cannot name."""
    image_type = PREVIEW_IMAGE_TYPES.get(media_type)
    if image_type is None:
        return None
    if metadata is None:
        return struct.pack(">II", PREVIEW_IMAGE, image_type) + image
    encoded = json.dumps({**metadata, "image_type": media_type}).encode()
    return struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(encoded)) + encoded + image


@dataclass
class PromptMessages:
    """One prompt's translation, fed the timeline events in seq order and the latest live state."""

    prompt_id: str
    started: bool = False  # execution_start sent
    cached_due: bool = False  # execution_cached not sent yet since execution_start
    ended: bool = False  # the end (`executing` null) sent
    current: str | None = None
    current_class: str = ""
    # Nodes the timeline saw finish, in order, with the (value, max) progress_state reports for them.
    finished: dict[str, tuple[float, float]] = field(default_factory=dict)
    finish_unreported: bool = False  # a finish no progress_state has told yet
    states_sent: int = 0
    last_step: tuple[float, float] | None = None
    last_seq: int = 0
    finished_states: dict[str, dict[str, Any]] = field(default_factory=dict)

    # --- feeding -------------------------------------------------------------------------------

    def feed(
        self,
        events: Sequence[Mapping[str, Any]],
        state: Mapping[str, Any],
        *,
        outputs: Mapping[str, Mapping[str, list[Any]]] | None = None,
        queue_remaining: int | None = None,
    ) -> list[Message]:
        """The messages for `events` (timeline payloads newer than `last_seq`, in seq order) and then for
        the live `state`'s step. `outputs` ({node: {kind: [file]}}) and `queue_remaining` are needed when
        the events end the prompt: the `executed` messages and the `status` before `executing` null."""
        sent: list[Message] = []
        for event in events:
            seq = int(event.get("seq") or 0)
            if seq and seq <= self.last_seq:
                continue  # already told (a broadcast after a backlog read)
            sent += self._event(event, state, outputs or {}, queue_remaining)
            self.last_seq = max(self.last_seq, seq)
        if int(state.get("seq") or 0) >= self.last_seq:
            sent += self._live_step(state)
        return sent

    def resume(self, state: Mapping[str, Any], finished: Sequence[str]) -> list[Message]:
        """What a socket that connects while the prompt runs gets first: its execution_start and cached
        nodes, the node running now and its latest step (ComfyUI itself resends only the `executing`)."""
        self.last_seq = int(state.get("seq") or 0)
        if state.get("status") != RUNNING:
            return []
        self.finished = {node: (1.0, 1.0) for node in finished}
        sent = self._start(state.get("started_at"))
        sent += self._cached([str(node) for node in state.get("cached_nodes") or []], state.get("started_at"))
        node = state.get("current_node") or {}
        if node.get("id") and node["id"] not in self.finished:
            self.current, self.current_class = str(node["id"]), str(node.get("class_type") or "")
            sent.append(self._progress_state())
            sent.append(self._executing(self.current))
        return sent + self._live_step(state)

    # --- one timeline event -----------------------------------------------------------------

    def _event(
        self,
        event: Mapping[str, Any],
        state: Mapping[str, Any],
        outputs: Mapping[str, Mapping[str, list[Any]]],
        queue_remaining: int | None,
    ) -> list[Message]:
        kind, data = event.get("kind"), event.get("data") or {}
        node = str(event.get("node_id") or "")
        if kind == "status":
            return self._status(str(data.get("to") or ""), event.get("at"), state, outputs, queue_remaining)
        if self.ended:
            return []
        if kind == "nodes_cached":
            return self._start(event.get("at")) + self._cached(
                [str(n) for n in data.get("nodes") or []], event.get("at")
            )
        if kind == "node_started" and node:
            return self._node_started(node, str(data.get("class_type") or ""), event.get("at"))
        if kind == "node_finished" and node:
            steps = data.get("steps")
            done = float(steps) if isinstance(steps, (int, float)) and steps > 0 else 1.0
            self.finished[node] = (done, done)
            self.finish_unreported = True
            return []
        if kind == "steps" and node == self.current:
            return self._step(data.get("value"), data.get("max"))
        return []  # output, error, note, attempt: told by the status that ends the prompt

    def _status(
        self,
        to: str,
        at: Any,
        state: Mapping[str, Any],
        outputs: Mapping[str, Mapping[str, list[Any]]],
        queue_remaining: int | None,
    ) -> list[Message]:
        if to == RUNNING:
            return self._start(at)
        if to == QUEUED and self.started and not self.ended:
            self._new_attempt()  # retried: the next attempt runs the prompt again from its start
            return []
        if to not in FINAL or self.ended:
            return []
        if to == COMPLETED:
            sent = self._ended_well(at, outputs)
        elif to == FAILED and _failure_category(state) == "interrupted" and self.started:
            sent = [self._interrupted(at)]  # ComfyUI's interrupt from someone else than this client
        elif to == FAILED:
            sent = self._failed(at, state)
        elif self.started:
            sent = [self._interrupted(at)]
        else:
            # Cancelled before it ran: ComfyUI's deleted prompt simply vanishes from its queue.
            self.ended = True
            return [] if queue_remaining is None else [status_message(queue_remaining)]
        self.ended = True
        if queue_remaining is not None:
            sent.append(status_message(queue_remaining))
        return [*sent, message("executing", {"node": None, "prompt_id": self.prompt_id})]

    def _new_attempt(self) -> None:
        self.started = self.cached_due = self.finish_unreported = False
        self.current, self.current_class, self.last_step = None, "", None
        self.finished, self.finished_states = {}, {}
        self.states_sent = 0

    # --- pieces -------------------------------------------------------------------------------

    def _start(self, at: Any) -> list[Message]:
        if self.started:
            return []
        self.started = self.cached_due = True
        return [message("execution_start", {"prompt_id": self.prompt_id, "timestamp": timestamp_ms(at)})]

    def _cached(self, nodes: list[str], at: Any) -> list[Message]:
        if not self.cached_due and not nodes:
            return []
        self.cached_due = False
        return [
            message("execution_cached", {"nodes": nodes, "prompt_id": self.prompt_id, "timestamp": timestamp_ms(at)})
        ]

    def _begun(self, at: Any) -> list[Message]:
        """execution_start and execution_cached, if this is the first thing heard of the run."""
        return self._start(at) + self._cached([], at)

    def _node_started(self, node: str, class_type: str, at: Any) -> list[Message]:
        sent = self._begun(at)
        first = self.states_sent == 0
        self.finished.pop(node, None)  # a node running again (a retried attempt) is not finished
        self.current, self.current_class, self.last_step = node, class_type, None
        if self.finish_unreported:
            sent.append(self._progress_state(include_current=False))
        elif first:
            # ComfyUI reports the first node running before its `executing` (and no other one).
            sent.append(self._progress_state())
        sent.append(self._executing(node))
        return sent

    def _live_step(self, state: Mapping[str, Any]) -> list[Message]:
        """The latest step the live state holds for the node being told now."""
        if self.ended or state.get("status") != RUNNING:
            return []
        node = (state.get("current_node") or {}).get("id")
        step = state.get("step") or {}
        if node is None or str(node) != self.current:
            return []
        return self._step(step.get("value"), step.get("max"))

    def _step(self, value: Any, maximum: Any) -> list[Message]:
        if not isinstance(value, (int, float)) or not isinstance(maximum, (int, float)) or self.current is None:
            return []
        last = self.last_step
        # A timeline sample is stored (and numbered) up to a database write after it was taken: by then
        # the live state may have told a later step of the same bar. A bar only moves forward.
        if last is not None and float(maximum) == last[1] and float(value) <= last[0]:
            return []
        self.last_step = (float(value), float(maximum))
        return [
            self._progress_state(),
            message("progress", {"value": value, "max": maximum, "prompt_id": self.prompt_id, "node": self.current}),
        ]

    def _executing(self, node: str) -> Message:
        return message("executing", {"node": node, "display_node": node, "prompt_id": self.prompt_id})

    def _progress_state(self, *, include_current: bool = True) -> Message:
        # A finished node's entry never changes: made once, not again for each of the run's steps.
        nodes = {node: self._finished_state(node) for node in self.finished}
        if include_current and self.current is not None and self.current not in self.finished:
            value, maximum = self.last_step or (0.0, 1.0)
            nodes[self.current] = self._node_state(self.current, value, maximum, "running")
        self.finish_unreported = False
        self.states_sent += 1
        return message("progress_state", {"prompt_id": self.prompt_id, "nodes": nodes})

    def _finished_state(self, node: str) -> dict[str, Any]:
        value, maximum = self.finished[node]
        made = self.finished_states.get(node)
        if made is None or (made["value"], made["max"]) != (value, maximum):
            made = self.finished_states[node] = self._node_state(node, value, maximum, "finished")
        return made

    def _node_state(self, node: str, value: float, maximum: float, state: str) -> dict[str, Any]:
        return {
            "value": value,
            "max": maximum,
            "state": state,
            "node_id": node,
            "prompt_id": self.prompt_id,
            "display_node_id": node,
            "parent_node_id": None,
            "real_node_id": node,
        }

    def _ended_well(self, at: Any, outputs: Mapping[str, Mapping[str, list[Any]]]) -> list[Message]:
        sent = self._begun(at)
        for node, output in outputs.items():
            if node not in self.finished:
                # A cached output node is run again for its outputs: ComfyUI reports it finished.
                self.finished[node] = (1.0, 1.0)
                self.finish_unreported = True
            sent.append(
                message(
                    "executed",
                    {"node": node, "display_node": node, "output": dict(output), "prompt_id": self.prompt_id},
                )
            )
        if self.finish_unreported:
            sent.append(self._progress_state(include_current=False))
        sent.append(message("execution_success", {"prompt_id": self.prompt_id, "timestamp": timestamp_ms(at)}))
        return sent

    def _failed(self, at: Any, state: Mapping[str, Any]) -> list[Message]:
        error: dict[str, Any] = state.get("error") or {}
        details: dict[str, Any] = error["details"] if isinstance(error.get("details"), dict) else {}
        node_id = details.get("node_id")
        exception_type = str(details.get("exception_type") or error.get("category") or "error")
        exception_message = str(details.get("exception_message") or error.get("message") or "")
        data: dict[str, Any] = {
            "prompt_id": self.prompt_id,
            "node_id": None if node_id is None else str(node_id),
            "node_type": details.get("node_type") or (self.current_class if node_id == self.current else None),
            "executed": [str(node) for node in (details.get("executed") or self._executed())][:EXECUTED_MAX],
            "exception_message": exception_message[:EXCEPTION_MESSAGE_MAX_CHARS],
            "exception_type": exception_type[:200],
            "traceback": bounded_traceback(details.get("traceback")),
            "current_inputs": {},
            "current_outputs": {},
            "timestamp": timestamp_ms(at),
        }
        return [message("execution_error", data)]

    def _executed(self) -> list[str]:
        """The nodes that completed: the one running when the prompt stopped did not."""
        return [node for node in self.finished if node != self.current][:EXECUTED_MAX]

    def _interrupted(self, at: Any) -> Message:
        return message(
            "execution_interrupted",
            {
                "prompt_id": self.prompt_id,
                "node_id": self.current,
                "node_type": self.current_class or None,
                "executed": self._executed(),
                "timestamp": timestamp_ms(at),
            },
        )


def _failure_category(state: Mapping[str, Any]) -> str:
    error = state.get("error")
    return str(error.get("category") or "") if isinstance(error, dict) else ""


def bounded_traceback(lines: Any) -> list[str]:
    """ComfyUI's traceback lines, kept to a bounded size: the last lines say where it broke."""
    if not isinstance(lines, list):
        return []
    kept = [str(line)[:TRACEBACK_LINE_MAX_CHARS] for line in lines[-TRACEBACK_MAX_LINES:]]
    return kept
