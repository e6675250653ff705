"""ComfyUI's frequent `progress` and `progress_state` frames, skipped by comfyui.ws when a later one
of the same kind has already arrived, and slept through by the tracker's session between writes
and broadcasts: every other message still arrives, in order, and the progress handed out is always
the latest that had arrived. A raw websocket server on a thread sends exactly the bytes under test."""

from __future__ import annotations

import base64
import json
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest

from comfyui import ComfyUIClient, ComfyUIError, PreviewFrame, UndecodedFrame, WsMessage, parse_text_frame
from comfyui.ws import ComfySocket
from jobs.tracking.coalescer import Coalescer
from jobs.tracking.session import ComfySession
from tests.conftest import load_trace
from tests.unit.test_comfyui_websocket_frames import RawServer, frame, text


def progress(value: float, *, most: float = 20, node: str = "2") -> dict[str, Any]:
    return {"type": "progress", "data": {"value": value, "max": most, "prompt_id": "p1", "node": node}}


def progress_state(value: float) -> dict[str, Any]:
    nodes = {"2": {"state": "running", "value": value, "max": 20, "node_id": "2", "prompt_id": "p1"}}
    return {"type": "progress_state", "data": {"prompt_id": "p1", "nodes": nodes}}


def executing(node: str) -> dict[str, Any]:
    return {"type": "executing", "data": {"node": node, "display_node": node, "prompt_id": "p1"}}


def preview(image: bytes) -> bytes:
    return frame(0x2, struct.pack(">II", 1, 1) + image)


def shown(message: Any) -> Any:
    """What a reader gets once it decodes: the message itself, a preview as its image."""
    if isinstance(message, UndecodedFrame):
        return message.decode()
    if isinstance(message, PreviewFrame):
        return message.image
    return message


def parsed(message: dict[str, Any]) -> WsMessage | None:
    return parse_text_frame(json.dumps(message))


@pytest.fixture
def server() -> Iterator[RawServer]:
    raw = RawServer().start()
    yield raw
    raw.stop()


@pytest.fixture
def comfy(server: RawServer) -> Iterator[ComfySocket]:
    sock = ComfyUIClient(f"http://127.0.0.1:{server.port}").connect("tracker-1", preview_metadata=False)
    yield sock
    server.stop()
    sock.close()


def drain(comfy: ComfySocket) -> list[Any]:
    received = []
    while (message := comfy.receive(0.5)) is not None:
        received.append(shown(message))
    return received


def test_only_the_latest_progress_of_each_kind_before_another_message_is_handed_out(
    server: RawServer, comfy: ComfySocket
) -> None:
    server.send(
        b"".join(
            text(m)
            for m in (
                progress_state(1),
                progress(1),
                progress_state(2),
                progress(2),
                executing("3"),
                progress_state(3),
                progress(3),
                progress(4),
            )
        )
    )

    assert drain(comfy) == [
        parsed(progress_state(2)),
        parsed(progress(2)),
        parsed(executing("3")),
        parsed(progress_state(3)),
        parsed(progress(4)),
    ]
    assert (comfy.messages, comfy.superseded) == (8, 3)


def test_a_preview_between_progress_frames_is_kept_and_the_later_progress_wins(
    server: RawServer, comfy: ComfySocket
) -> None:
    server.send(text(progress(1)) + preview(b"step one") + text(progress(2)) + preview(b"step two"))

    assert drain(comfy) == [b"step one", b"step two", parsed(progress(2))]


def test_a_frame_split_across_reads_is_never_skipped_for_one_that_has_not_arrived_whole(
    server: RawServer, comfy: ComfySocket
) -> None:
    second = text(progress(2))
    server.send(text(progress(1)) + second[:9])

    assert shown(comfy.receive(5)) == parsed(progress(1))
    assert comfy.receive(0.05) is None
    server.send(second[9:])
    assert shown(comfy.receive(5)) == parsed(progress(2))


def test_a_fragmented_progress_is_superseded_and_supersedes_like_a_whole_one(
    server: RawServer, comfy: ComfySocket
) -> None:
    def fragmented(message: dict[str, Any]) -> bytes:
        body = json.dumps(message).encode()
        return frame(0x1, body[:12], fin=False) + frame(0x9, b"ping") + frame(0x0, body[12:])

    server.send(fragmented(progress(1)) + text(progress(2)) + fragmented(progress(3)) + text(executing("3")))

    assert drain(comfy) == [parsed(progress(3)), parsed(executing("3"))]
    assert comfy.superseded == 2
    assert server.received_frame() == (0xA, b"ping")


def test_a_close_after_progress_hands_out_the_latest_progress_first(server: RawServer, comfy: ComfySocket) -> None:
    server.send(text(progress(1)) + text(progress(2)) + frame(0x8, b"\x03\xe8"))

    assert shown(comfy.receive(5)) == parsed(progress(2))
    with pytest.raises(ComfyUIError, match="closed by ComfyUI") as raised:
        comfy.receive(5)
    assert raised.value.retryable


def test_a_frame_that_only_begins_like_progress_is_decoded_and_keeps_its_place(
    server: RawServer, comfy: ComfySocket
) -> None:
    # JSON keeps the last of repeated keys: this is an execution_error, and nothing may skip it.
    impostor = b'{"type": "progress", "data": {"value": 9}, "type": "execution_error"}'
    server.send(text(progress(1)) + frame(0x1, impostor) + text(progress(2)))

    assert drain(comfy) == [
        parsed(progress(1)),
        WsMessage(type="execution_error", data={"value": 9}),
        parsed(progress(2)),
    ]


def test_recorded_comfyui_previews_run_arrives_with_nothing_but_superseded_progress_missing(
    server: RawServer, comfy: ComfySocket
) -> None:
    """preview.jsonl (a real ComfyUI: progress_state, progress and a preview at each step), sent at once."""
    sent: list[Any] = []
    stream = b""
    for entry in load_trace("preview.jsonl"):
        if entry["kind"] == "ws":
            stream += text(entry["msg"])
            sent.append(parsed(entry["msg"]))
        elif entry["kind"] == "ws_binary":
            payload = base64.b64decode(entry["b64"])
            stream += frame(0x2, payload)
            sent.append(payload[8:])
    server.send(stream)

    received = drain(comfy)

    def kinds(messages: list[Any]) -> set[str]:
        return {m.type for m in messages if isinstance(m, WsMessage)}

    others = [m for m in sent if not (isinstance(m, WsMessage) and m.type in ("progress", "progress_state"))]
    assert [m for m in received if m in others] == others, "every other message, in order"
    assert len(received) < len(sent) and kinds(received) == kinds(sent)
    last_step = next(m for m in reversed(sent) if isinstance(m, WsMessage) and m.type == "progress")
    assert last_step in received, "the sampler's last step"
    assert comfy.messages == len(sent)


@pytest.mark.parametrize(
    ("data", "steps"),
    [
        ({"value": 3, "max": 20, "node": "2"}, ("2", 3.0, 20.0)),
        ({"value": 0.25, "max": 1.5, "node": "4.0.0.3"}, ("4.0.0.3", 0.25, 1.5)),
        ({"value": 21, "max": 20, "node": "2"}, None),
        ({"value": True, "max": 20, "node": "2"}, None),
        ({"value": "3", "max": 20, "node": "2"}, None),
        ({"value": 3, "max": float("inf"), "node": "2"}, None),
        ({"value": 3, "max": 20, "node": 2}, None),
        ({"value": 3, "node": "2"}, None),
    ],
)
def test_a_steps_hint_is_read_only_from_a_well_formed_progress(data: dict[str, Any], steps: Any) -> None:
    frame = UndecodedFrame("progress", json.dumps({"type": "progress", "data": data}).encode())

    assert frame.steps() == steps


# --- the session: what it hands out once a write is due, and sleeping through a sampler's steps ---


class DueAt:
    """The coalescer's times, as ComfySession.receive reads them."""

    def __init__(self, *, broadcast_in: float, write_in: float) -> None:
        now = time.monotonic()
        self.times = (now + broadcast_in, now + write_in)

    def due_at(self) -> tuple[float, float]:
        return self.times


def session_on(comfy: ComfySocket, due: DueAt) -> ComfySession:
    session = ComfySession(
        cast(Any, None),
        ComfyUIClient("http://127.0.0.1:9"),
        client_id="tracker-1",
        prompt_id="p1",
        coalescer=cast(Coalescer, due),
        ending=cast(Any, None),
    )
    session.socket = comfy
    return session


def test_the_progress_released_when_a_write_is_due_is_the_latest_that_came(
    server: RawServer, comfy: ComfySocket
) -> None:
    session = session_on(comfy, DueAt(broadcast_in=60, write_in=1.0))

    def sampler() -> None:
        for value in range(1, 6):
            server.send(text(progress_state(value)) + text(progress(value)))
            time.sleep(0.01)
        time.sleep(1.1)  # the write is due by now: the next frame releases everything held
        server.send(text(progress_state(6)))

    threading.Thread(target=sampler, daemon=True).start()
    released = [session.receive(5), session.receive(5)]

    assert released == [parsed(progress(5)), parsed(progress_state(6))]
    assert session.messages == 11


def test_a_node_that_ends_while_the_session_sleeps_through_its_steps_is_heard_after_its_last_step(
    server: RawServer, comfy: ComfySocket
) -> None:
    session = session_on(comfy, DueAt(broadcast_in=60, write_in=60))
    steps = 60
    reads = 0
    real_read = comfy._read

    def counted_read(timeout: float) -> bool:
        nonlocal reads
        reads += 1
        return real_read(timeout)

    comfy._read = counted_read  # type: ignore[method-assign]

    def sampler() -> None:
        for value in range(1, steps + 1):
            server.send(text(progress_state(value)) + text(progress(value, most=steps)))
            time.sleep(0.01)
        server.send(text(executing("3")))

    threading.Thread(target=sampler, daemon=True).start()
    released = [session.receive(5) for _ in range(3)]

    assert released == [parsed(progress_state(steps)), parsed(progress(steps, most=steps)), parsed(executing("3"))]
    assert session.messages == 2 * steps + 1
    assert reads < steps, f"{reads} reads for {2 * steps + 1} frames: the steps were slept through"
