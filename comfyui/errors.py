"""The one error type of the ComfyUI client."""

from __future__ import annotations

from typing import Any


class ComfyUIError(Exception):
    """Anything that went wrong talking to ComfyUI.

    retryable: ComfyUI was unreachable, timed out, dropped the socket, answered 5xx or something
    unreadable, so trying again can help; a 4xx rejection (validation, `node_errors`) cannot.
    """

    def __init__(self, message: str, *, retryable: bool, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.body = body


class OutputTooLarge(ComfyUIError):
    """An output file is larger than the caller's limit; its download was cut off there."""

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message, retryable=False)
        self.limit = limit
