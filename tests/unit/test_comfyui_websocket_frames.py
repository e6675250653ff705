"""ComfyUI's websocket, read by comfyui.ws from a raw server on a thread: every message arrives whole
however TCP cuts it (fragments, pings between them, lengths in all three sizes), pings are answered,
and a server that closes or breaks the protocol is a retryable ComfyUIError, never a hang or a crash.
The frequent progress frames come undecoded and decode to exactly what a full parse gives."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from comfyui import ComfyUIClient, ComfyUIError, PreviewFrame, UndecodedFrame, WsMessage, parse_text_frame
from comfyui.protocol import read_text_frame
from comfyui.ws import ComfySocket

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PROGRESS = {"type": "progress", "data": {"value": 3, "max": 20, "prompt_id": "p1", "node": "2"}}
EXECUTING_DATA: dict[str, Any] = {"node": "3", "display_node": "3", "prompt_id": "p1"}
EXECUTING = {"type": "executing", "data": EXECUTING_DATA}


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bytes | None = None) -> bytes:
    length = len(payload)
    if length < 126:
        size = bytes([length | (0x80 if mask else 0)])
    elif length < 1 << 16:
        size = bytes([126 | (0x80 if mask else 0)]) + struct.pack(">H", length)
    else:
        size = bytes([127 | (0x80 if mask else 0)]) + struct.pack(">Q", length)
    if mask:
        payload = mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([(0x80 if fin else 0) | opcode]) + size + payload


def text(message: dict) -> bytes:
    return frame(0x1, json.dumps(message).encode())


class RawServer:
    """Accepts one websocket, then sends `chunks` (each sendall'd alone) and records what comes back."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.peer: socket.socket | None = None
        self.accepted = threading.Event()

    def start(self) -> RawServer:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        peer, _ = self.listener.accept()
        request = b""
        while b"\r\n\r\n" not in request:
            request += peer.recv(4096)
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key")
        )
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        peer.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self.peer = peer
        self.accepted.set()

    def send(self, *chunks: bytes) -> None:
        self.accepted.wait(5)
        assert self.peer is not None
        for chunk in chunks:
            self.peer.sendall(chunk)

    def received_frame(self) -> tuple[int, bytes]:
        """The next frame the client sent (clients mask theirs)."""
        assert self.peer is not None
        self.peer.settimeout(5)
        head = self._exactly(2)
        length = head[1] & 0x7F
        if length == 126:
            (length,) = struct.unpack(">H", self._exactly(2))
        mask = self._exactly(4)
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(self._exactly(length)))
        return head[0] & 0x0F, payload

    def _exactly(self, size: int) -> bytes:
        assert self.peer is not None
        data = b""
        while len(data) < size:
            data += self.peer.recv(size - len(data))
        return data

    def stop(self) -> None:
        if self.peer is not None:
            self.peer.close()
            self.peer = None
        self.listener.close()


@pytest.fixture
def server() -> Iterator[RawServer]:
    raw = RawServer().start()
    yield raw
    raw.stop()


@pytest.fixture
def comfy(server: RawServer) -> Iterator[ComfySocket]:
    sock = ComfyUIClient(f"http://127.0.0.1:{server.port}").connect("tracker-1", preview_metadata=False)
    yield sock
    server.stop()  # first: closing waits up to a second for a server's answer that this one never sends
    sock.close()


def test_frames_cut_anywhere_by_tcp_arrive_whole_and_in_order(server: RawServer, comfy: ComfySocket) -> None:
    stream = text(EXECUTING) + text(PROGRESS) + frame(0x2, struct.pack(">II", 1, 2) + b"\x89PNG" * 40_000)
    server.send(*(stream[i : i + 7] for i in range(0, len(stream), 7)))

    executing, progress, preview = (comfy.receive(5) for _ in range(3))

    assert executing == WsMessage(type="executing", data=EXECUTING_DATA)
    assert isinstance(progress, UndecodedFrame) and progress.decode() == parse_text_frame(json.dumps(PROGRESS))
    assert isinstance(preview, PreviewFrame)
    assert preview.media_type == "image/png" and preview.image == b"\x89PNG" * 40_000


def test_a_fragmented_message_with_a_ping_inside_is_whole_and_the_ping_answered(
    server: RawServer, comfy: ComfySocket
) -> None:
    body = json.dumps(EXECUTING).encode()
    server.send(frame(0x1, body[:10], fin=False), frame(0x9, b"are you there"), frame(0x0, body[10:20], fin=False))
    server.send(frame(0x0, body[20:]))

    assert comfy.receive(5) == WsMessage(type="executing", data=EXECUTING_DATA)
    assert server.received_frame() == (0xA, b"are you there")


def test_nothing_within_the_timeout_is_none_and_a_partial_frame_is_kept(server: RawServer, comfy: ComfySocket) -> None:
    whole = text(EXECUTING)
    server.send(whole[:5])

    assert comfy.receive(0.05) is None
    server.send(whole[5:])
    assert comfy.receive(5) == WsMessage(type="executing", data=EXECUTING_DATA)


@pytest.mark.parametrize(
    ("sent", "said"),
    [
        (frame(0x8, b"\x03\xe8"), "closed by ComfyUI"),
        (frame(0x1, b'{"type": "status"}', mask=b"abcd"), "masked"),
        (bytes([0x81 | 0x40, 2]) + b"{}", "reserved bits"),
        (bytes([0x82, 127]) + struct.pack(">Q", 1 << 40), "a frame of"),
        (frame(0x0, b"tail"), "no message to continue"),
        (frame(0x1, b'{"ty', fin=False) + text(EXECUTING), "inside a fragmented one"),
    ],
)
def test_a_server_that_closes_or_breaks_the_protocol_is_a_retryable_error(
    server: RawServer, comfy: ComfySocket, sent: bytes, said: str
) -> None:
    server.send(sent)

    with pytest.raises(ComfyUIError, match=said) as raised:
        comfy.receive(5)
    assert raised.value.retryable


def test_a_dropped_connection_is_a_retryable_error(server: RawServer, comfy: ComfySocket) -> None:
    server.send(text(EXECUTING)[:4])
    server.stop()

    with pytest.raises(ComfyUIError, match="lost") as raised:
        comfy.receive(5)
    assert raised.value.retryable


@pytest.mark.parametrize(
    "message",
    [
        PROGRESS,
        {"type": "progress_state", "data": {"prompt_id": "p1", "nodes": {"2": {"state": "running", "value": 1}}}},
    ],
)
def test_progress_frames_are_left_undecoded_and_decode_as_a_full_parse_would(message: dict) -> None:
    payload = json.dumps(message)

    undecoded = read_text_frame(payload.encode())

    assert isinstance(undecoded, UndecodedFrame) and undecoded.type == message["type"]
    assert undecoded.decode() == parse_text_frame(payload)


@pytest.mark.parametrize(
    "payload",
    [
        # JSON keeps the last of repeated keys; an escape can spell "type" without its bytes.
        '{"type": "progress", "data": {}, "type": "execution_error"}',
        '{"type": "progress", "data": {}, "typ\\u0065": "execution_error"}',
    ],
)
def test_a_frame_cannot_pass_for_progress_by_its_first_bytes(payload: str) -> None:
    read = read_text_frame(payload.encode())

    assert isinstance(read, WsMessage) and read.type == "execution_error"
