"""ComfyUI's websocket, opened with our client id: websocket-client's handshake and sending, our own
reading of the frames.

A sampler makes ComfyUI send about 200 frames a second. websocket-client reads each frame in three
socket reads (header, length, payload) with timeouts around each, in pure Python; at that rate that
was half of a tracker's CPU (devtools/benchmarks/tracker_cpu.py). Here one read takes whatever has
arrived, and the frames are cut from a buffer. Only what RFC 6455 lets a server send without an
extension we asked for is accepted: unmasked frames, fragmented messages, pings (answered),
pongs (ignored) and close.
"""

from __future__ import annotations

import websocket

from comfyui.errors import ComfyUIError
from comfyui.protocol import PreviewFrame, UndecodedFrame, WsMessage, parse_binary_frame, read_text_frame

# One read takes up to this much; into a buffer kept for it (recv(n) would allocate n bytes each time).
RECEIVE_BYTES = 64 * 1024
# Previews are the largest messages ComfyUI sends; anything past this is not a preview.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

OPCODE_CONTINUATION = 0x0
OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2
OPCODE_CLOSE = 0x8
OPCODE_PING = 0x9


class ComfySocket:
    """A websocket opened with our client id; ComfyUI sends a prompt's events only to it."""

    def __init__(self, conn: websocket.WebSocket) -> None:
        self._conn = conn
        if conn.sock is None:
            raise ComfyUIError("websocket not connected", retryable=True)
        # The handshake read the answer's headers a byte at a time: nothing past them was read.
        self._sock = conn.sock
        self._buffer = bytearray()
        self._chunk = memoryview(bytearray(RECEIVE_BYTES))
        self._fragments: list[bytes] = []  # a fragmented message's frames so far; the first sets its opcode
        self._fragmented_opcode = 0

    def receive(self, timeout: float) -> WsMessage | UndecodedFrame | PreviewFrame | None:
        """The next message, or None when nothing arrived within `timeout` seconds (or it was unreadable).

        `progress` and `progress_state` come undecoded (comfyui.protocol.read_text_frame).
        """
        while True:
            frame = self._next_frame()
            if frame is None:
                if not self._read(timeout):
                    return None
                continue
            message = self._message(*frame)
            if message is None:
                continue  # a control frame, or one fragment of a longer message
            opcode, payload = message
            if opcode == OPCODE_TEXT:
                return read_text_frame(payload)
            if opcode == OPCODE_BINARY:
                return parse_binary_frame(payload)
            return None

    def close(self) -> None:
        try:
            self._conn.close(timeout=1)
        except (websocket.WebSocketException, OSError):
            pass

    def _read(self, timeout: float) -> bool:
        """Append what has arrived to the buffer; False when nothing came within `timeout`."""
        try:
            self._sock.settimeout(timeout)
            size = self._sock.recv_into(self._chunk)
        except TimeoutError:
            return False
        except OSError as exc:
            raise ComfyUIError(f"websocket lost: {exc}", retryable=True) from exc
        if not size:
            raise ComfyUIError("websocket lost: ComfyUI closed the connection", retryable=True)
        self._buffer += self._chunk[:size]
        return True

    def _next_frame(self) -> tuple[bool, int, bytes] | None:
        """(fin, opcode, payload) of the first whole frame in the buffer, or None until one is there."""
        buffer = self._buffer
        if len(buffer) < 2:
            return None
        first, second = buffer[0], buffer[1]
        if first & 0x70:
            raise _protocol_error("reserved bits set (no extension was negotiated)")
        if second & 0x80:
            raise _protocol_error("a masked frame (RFC 6455 5.1: a server never masks)")
        length, start = second & 0x7F, 2
        if length == 126:
            length, start = int.from_bytes(buffer[2:4], "big"), 4
        elif length == 127:
            length, start = int.from_bytes(buffer[2:10], "big"), 10
        if len(buffer) < start:
            return None
        if length > MAX_MESSAGE_BYTES:
            raise _protocol_error(f"a frame of {length} bytes")
        end = start + length
        if len(buffer) < end:
            return None
        payload = bytes(buffer[start:end])
        del buffer[:end]
        return bool(first & 0x80), first & 0x0F, payload

    def _message(self, fin: bool, opcode: int, payload: bytes) -> tuple[int, bytes] | None:
        """A whole data message (opcode, payload) once its last fragment is in; control frames answered."""
        if opcode & 0x8:
            if opcode == OPCODE_CLOSE:
                raise ComfyUIError("websocket closed by ComfyUI", retryable=True)
            if opcode == OPCODE_PING:
                self._pong(payload)
            return None  # pongs, and control opcodes nobody defined
        if opcode == OPCODE_CONTINUATION:
            if not self._fragments:
                raise _protocol_error("a continuation frame with no message to continue")
            self._fragments.append(payload)
            if sum(map(len, self._fragments)) > MAX_MESSAGE_BYTES:
                raise _protocol_error("a fragmented message over the size limit")
        elif self._fragments:
            raise _protocol_error("a new message inside a fragmented one")
        elif fin:
            return opcode, payload
        else:
            self._fragments, self._fragmented_opcode = [payload], opcode
        if not fin:
            return None
        whole = b"".join(self._fragments)
        self._fragments = []
        return self._fragmented_opcode, whole

    def _pong(self, payload: bytes) -> None:
        try:
            self._conn.pong(payload)
        except (websocket.WebSocketException, OSError) as exc:
            raise ComfyUIError(f"websocket lost: {exc}", retryable=True) from exc


def _protocol_error(what: str) -> ComfyUIError:
    return ComfyUIError(f"websocket from ComfyUI broke the protocol: {what}", retryable=True)
