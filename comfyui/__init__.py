"""Everything that speaks to ComfyUI: its HTTP API and websocket, and the parsing of what it sends.

No Django imports: it takes a base URL and timeouts, returns small typed objects and raises one
error type, `ComfyUIError`, whose `retryable` says whether trying again can help.
"""

from comfyui.client import ComfyUIClient
from comfyui.errors import ComfyUIError
from comfyui.protocol import (
    HistoryEntry,
    OutputFile,
    PreviewFrame,
    QueueSnapshot,
    SubmitResult,
    UndecodedFrame,
    WsMessage,
    history_outputs,
    parse_binary_frame,
    parse_text_frame,
)
from comfyui.uploads import UploadedInput
from comfyui.ws import ComfySocket

__all__ = [
    "ComfySocket",
    "ComfyUIClient",
    "ComfyUIError",
    "HistoryEntry",
    "OutputFile",
    "PreviewFrame",
    "QueueSnapshot",
    "SubmitResult",
    "UndecodedFrame",
    "UploadedInput",
    "WsMessage",
    "history_outputs",
    "parse_binary_frame",
    "parse_text_frame",
]
