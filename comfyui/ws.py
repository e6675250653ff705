"""ComfyUI's websocket, opened with our client id (websocket-client)."""

from __future__ import annotations

import websocket

from comfyui.errors import ComfyUIError
from comfyui.protocol import PreviewFrame, WsMessage, parse_binary_frame, parse_text_frame


class ComfySocket:
    """A websocket opened with our client id; ComfyUI sends a prompt's events only to it."""

    def __init__(self, conn: websocket.WebSocket) -> None:
        self._conn = conn

    def receive(self, timeout: float) -> WsMessage | PreviewFrame | None:
        """The next message, or None when nothing arrived within `timeout` seconds."""
        self._conn.settimeout(timeout)
        try:
            opcode, payload = self._conn.recv_data()
        except websocket.WebSocketTimeoutException:
            return None
        except (websocket.WebSocketException, OSError) as exc:
            raise ComfyUIError(f"websocket lost: {exc}", retryable=True) from exc
        if opcode == websocket.ABNF.OPCODE_TEXT:
            return parse_text_frame(payload.decode("utf-8", errors="replace"))
        if opcode == websocket.ABNF.OPCODE_BINARY:
            return parse_binary_frame(payload)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            raise ComfyUIError("websocket closed by ComfyUI", retryable=True)
        return None

    def close(self) -> None:
        try:
            self._conn.close(timeout=1)
        except (websocket.WebSocketException, OSError):
            pass
