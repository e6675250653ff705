"""ComfyUI's websocket, opened with our client id: websocket-client's handshake and sending, our own
reading of the frames.

A sampler makes ComfyUI send about 200 frames a second. websocket-client reads each frame in three
socket reads (header, length, payload) with timeouts around each, in pure Python; at that rate that
was half of a tracker's CPU (devtools/benchmarks/tracker_cpu.py). Here one read takes whatever has
arrived, and every whole frame in it is cut from the buffer in one pass. A `progress` or
`progress_state` followed in that pass by another of its kind, with only progress and previews
between, is superseded: it is counted and skipped by its length, never copied or decoded (the
reader would only have kept the later one). Only what RFC 6455 lets a server send without an
extension we asked for is accepted: unmasked frames, fragmented messages, pings (answered),
pongs (ignored) and close.
"""

from __future__ import annotations

from collections import deque

import websocket

from comfyui.errors import ComfyUIError
from comfyui.protocol import (
    PreviewFrame,
    UndecodedFrame,
    WsMessage,
    parse_binary_frame,
    parse_text_frame,
    read_text_frame,
    undecoded_kind,
)

# One read takes up to this much; into a buffer kept for it (recv(n) would allocate n bytes each time).
RECEIVE_BYTES = 64 * 1024
# A read that fills its buffer is followed by more, without waiting, up to this many in all: one
# pass then sees a whole burst (after the reader slept) at a bounded cost in memory.
RECEIVE_READS = 16
# Previews are the largest messages ComfyUI sends; anything past this is not a preview.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

OPCODE_CONTINUATION = 0x0
OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2
OPCODE_CLOSE = 0x8
OPCODE_PING = 0x9

Message = WsMessage | UndecodedFrame | PreviewFrame


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
        self._ready: deque[Message] = deque()  # cut from the buffer, not handed out yet
        self._broken: ComfyUIError | None = None  # raised once what came before it is handed out
        self.messages = 0  # data messages received, the superseded ones included
        self.superseded = 0  # progress frames skipped undecoded (see the module's docstring)

    def receive(self, timeout: float) -> Message | None:
        """The next message, or None when nothing arrived within `timeout` seconds (0: only what
        has arrived already). Unreadable messages are dropped.

        `progress` and `progress_state` come undecoded (comfyui.protocol.read_text_frame).
        """
        while not self._ready:
            if self._broken is not None:
                raise self._broken
            if not self._read(timeout):
                return None
            self._cut_frames()
        return self._ready.popleft()

    @property
    def pending(self) -> bool:
        """Whether a message has arrived that receive() has not handed out yet."""
        return bool(self._ready)

    def close(self) -> None:
        try:
            self._conn.close(timeout=1)
        except (websocket.WebSocketException, OSError):
            pass

    def _read(self, timeout: float) -> bool:
        """Append what has arrived to the buffer; False when nothing came within `timeout`."""
        size = self._recv(timeout)
        if size is None:
            return False
        reads = 1
        try:
            while size == RECEIVE_BYTES and reads < RECEIVE_READS:
                size, reads = self._recv(0.0), reads + 1
        except ComfyUIError as exc:
            self._broken = exc  # after what did arrive
        return True

    def _recv(self, timeout: float) -> int | None:
        try:
            self._sock.settimeout(max(timeout, 0.0))
            size = self._sock.recv_into(self._chunk)
        except (TimeoutError, BlockingIOError):  # the second when timeout is 0
            return None
        except OSError as exc:
            raise ComfyUIError(f"websocket lost: {exc}", retryable=True) from exc
        if not size:
            raise ComfyUIError("websocket lost: ComfyUI closed the connection", retryable=True)
        self._buffer += self._chunk[:size]
        return size

    def _cut_frames(self) -> None:
        """Every whole frame in the buffer to `_ready`, the superseded progress skipped; a close or a
        broken frame stops the pass and is raised after the messages before it."""
        buffer, ready = self._buffer, self._ready
        # The latest `progress` and `progress_state` since the last other message: where their
        # text is in the buffer (or the text, when it came in fragments), in the order they came.
        latest: dict[str, tuple[int, int] | bytes] = {}
        offset = 0
        try:
            while (frame := self._frame_at(offset)) is not None:
                fin, opcode, start, offset = frame
                if fin and opcode == OPCODE_TEXT and not self._fragments:
                    # The frequent case, read in place: ComfyUI sends each message in one frame.
                    self.messages += 1
                    kind = undecoded_kind(buffer, start, offset)
                    if kind is not None:
                        self.superseded += latest.pop(kind, None) is not None
                        latest[kind] = (start, offset)
                        continue
                    self._flush(latest)
                    text = parse_text_frame(buffer[start:offset].decode("utf-8", errors="replace"))
                    if text is not None:
                        ready.append(text)
                    continue
                message = self._message(fin, opcode, bytes(buffer[start:offset]))
                if message is None:
                    continue  # a control frame, or one fragment of a longer message
                self.messages += 1
                if message[0] == OPCODE_BINARY:
                    # A preview changes only the preview; the reader holds progress across it too.
                    preview = parse_binary_frame(message[1])
                    if preview is not None:
                        ready.append(preview)
                    continue
                read = read_text_frame(message[1])
                if isinstance(read, UndecodedFrame):
                    self.superseded += latest.pop(read.type, None) is not None
                    latest[read.type] = read.payload
                    continue
                self._flush(latest)
                if read is not None:
                    ready.append(read)
        except ComfyUIError as exc:
            self._broken = exc
        finally:
            self._flush(latest)
            del buffer[:offset]

    def _flush(self, latest: dict[str, tuple[int, int] | bytes]) -> None:
        for kind, text in latest.items():
            payload = text if isinstance(text, bytes) else bytes(self._buffer[text[0] : text[1]])
            self._ready.append(UndecodedFrame(kind, payload))
        latest.clear()

    def _frame_at(self, offset: int) -> tuple[bool, int, int, int] | None:
        """(fin, opcode, payload start, payload end) of the whole frame at `offset` in the buffer,
        or None until one is there."""
        buffer = self._buffer
        available = len(buffer) - offset
        if available < 2:
            return None
        first, second = buffer[offset], buffer[offset + 1]
        if first & 0x70:
            raise _protocol_error("reserved bits set (no extension was negotiated)")
        if second & 0x80:
            raise _protocol_error("a masked frame (RFC 6455 5.1: a server never masks)")
        length, start = second & 0x7F, 2
        if length == 126:
            length, start = int.from_bytes(buffer[offset + 2 : offset + 4], "big"), 4
        elif length == 127:
            length, start = int.from_bytes(buffer[offset + 2 : offset + 10], "big"), 10
        if available < start:
            return None
        if length > MAX_MESSAGE_BYTES:
            raise _protocol_error(f"a frame of {length} bytes")
        if available < start + length:
            return None
        return bool(first & 0x80), first & 0x0F, offset + start, offset + start + length

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
