"""The one error type of the ComfyUI client."""

from __future__ import annotations

from typing import Any


class ComfyUIError(Exception):
    """Anything that went wrong talking to ComfyUI.

    kind: "unreachable" (connection refused, timeout, dropped socket), "server" (5xx),
    "rejected" (4xx, e.g. validation with node_errors), "protocol" (an answer we cannot read).
    """

    def __init__(
        self, message: str, *, kind: str, retryable: bool, status: int | None = None, body: Any = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable
        self.status = status
        self.body = body
