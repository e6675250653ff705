"""ComfyUI's protocol as small typed objects: answers, websocket frames, history entries.

Pure parsing, no I/O. Everything here comes from a GPU machine and is untrusted input.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

from comfyui.untrusted import UnreadableJSON, loads_untrusted

PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
IMAGE_TYPES = {1: "image/jpeg", 2: "image/png"}
# What a type-4 preview may say it is; anything else is taken as JPEG (previews are shown as images only).
PREVIEW_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/webp"})


@dataclass(frozen=True)
class SubmitResult:
    prompt_id: str
    number: int
    node_errors: dict[str, Any]


@dataclass(frozen=True)
class QueueSnapshot:
    running: list[str]
    pending: list[str]

    def position(self, prompt_id: str) -> str | None:
        if prompt_id in self.running:
            return "running"
        if prompt_id in self.pending:
            return "pending"
        return None


@dataclass(frozen=True)
class HistoryEntry:
    prompt_id: str
    status_str: str  # "success" or "error"
    outputs: dict[str, dict[str, Any]]
    messages: list[tuple[str, dict[str, Any]]]

    def message(self, kind: str) -> dict[str, Any] | None:
        for name, data in self.messages:
            if name == kind:
                return data
        return None


@dataclass(frozen=True)
class OutputFile:
    node_id: str
    kind: str
    filename: str
    subfolder: str
    type: str


@dataclass(frozen=True)
class WsMessage:
    """A text frame: {type, data}."""

    type: str
    data: dict[str, Any]

    @property
    def prompt_id(self) -> str | None:
        return self.data.get("prompt_id")


@dataclass(frozen=True)
class PreviewFrame:
    """A binary preview frame. Type 1 frames carry no prompt or node id; type 4 frames do."""

    image: bytes
    media_type: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt_id(self) -> str | None:
        return self.metadata.get("prompt_id")


def parse_binary_frame(frame: bytes) -> PreviewFrame | None:
    if len(frame) < 8:
        return None
    (event_type,) = struct.unpack(">I", frame[:4])
    if event_type == PREVIEW_IMAGE:
        (image_type,) = struct.unpack(">I", frame[4:8])
        return PreviewFrame(image=frame[8:], media_type=IMAGE_TYPES.get(image_type, "image/jpeg"))
    if event_type == PREVIEW_IMAGE_WITH_METADATA:
        (length,) = struct.unpack(">I", frame[4:8])
        try:
            metadata = loads_untrusted(frame[8 : 8 + length])
        except UnreadableJSON:
            return None
        if not isinstance(metadata, dict):
            return None
        media_type = metadata.get("image_type")
        if media_type not in PREVIEW_MEDIA_TYPES:
            media_type = "image/jpeg"
        return PreviewFrame(image=frame[8 + length :], media_type=media_type, metadata=metadata)
    return None


@dataclass(frozen=True)
class UndecodedFrame:
    """A `progress` or `progress_state` text frame whose type is known and whose body is not decoded yet.

    While a sampler runs ComfyUI sends both about 100 times a second, and each one supersedes the one
    before of its kind (`progress_state` carries the prompt's whole node map): a reader that needs the
    state only a few times a second decodes the latest one then, and never the others.
    """

    type: str
    payload: bytes

    def decode(self) -> WsMessage | None:
        return parse_text_frame(self.payload.decode("utf-8", errors="replace"))

    def steps(self) -> tuple[str, float, float] | None:
        """A `progress` frame's (node, value, max), when they are a node id and two finite numbers
        with 0 <= value <= max; None otherwise. A hint for when the node may end, nothing more."""
        message = self.decode() if self.type == "progress" else None
        if message is None:
            return None
        node, value, most = (
            message.data.get("node"),
            _number(message.data.get("value")),
            _number(message.data.get("max")),
        )
        if not isinstance(node, str) or value is None or most is None or not 0 <= value <= most < math.inf:
            return None
        return node, value, most


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# How ComfyUI's json.dumps begins the two frequent frames.
_UNDECODED_PREFIXES = ((b'{"type": "progress", ', "progress"), (b'{"type": "progress_state", ', "progress_state"))


def read_text_frame(payload: bytes) -> WsMessage | UndecodedFrame | None:
    """A text frame: `progress` and `progress_state` left undecoded (UndecodedFrame), the rest parsed."""
    kind = undecoded_kind(payload, 0, len(payload))
    if kind is not None:
        return UndecodedFrame(kind, payload)
    return parse_text_frame(payload.decode("utf-8", errors="replace"))


def undecoded_kind(data: bytes | bytearray, start: int, end: int) -> str | None:
    """The kind of the text frame in data[start:end] when it is surely `progress` or `progress_state`.

    Read in place (a reader can skip a superseded frame without copying it). The type is read from
    the first bytes only when no other key can be "type": JSON keeps the last of repeated keys, and
    only a `\\u` escape can spell "type" without its bytes. Any doubt means a full decode, so a frame
    cannot pass for another type.
    """
    for prefix, kind in _UNDECODED_PREFIXES:
        if (
            data.startswith(prefix, start, end)
            and data.count(b'"type"', start, end) == 1
            and data.find(b"\\u", start, end) < 0
        ):
            return kind
    return None


def parse_text_frame(text: str) -> WsMessage | None:
    try:
        raw = loads_untrusted(text)
    except UnreadableJSON:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        return None
    data = raw.get("data")
    return WsMessage(type=raw["type"], data=data if isinstance(data, dict) else {})


def parse_history_entry(prompt_id: str, body: Any) -> HistoryEntry | None:
    """The prompt's entry in a `/history/{prompt_id}` answer, or None when it has none."""
    raw = body.get(prompt_id) if isinstance(body, dict) else None
    if not isinstance(raw, dict):
        return None
    # Any shape may come back from a GPU machine: what is not the documented one counts as absent.
    found = raw.get("status")
    status: dict[str, Any] = found if isinstance(found, dict) else {}
    listed = status.get("messages")
    messages = [
        (str(m[0]), m[1] if isinstance(m[1], dict) else {})
        for m in (listed if isinstance(listed, list) else [])
        if isinstance(m, list) and len(m) == 2
    ]
    outputs = raw.get("outputs")
    return HistoryEntry(
        prompt_id=prompt_id,
        status_str=str(status.get("status_str") or ""),
        outputs={str(k): v for k, v in outputs.items() if isinstance(v, dict)} if isinstance(outputs, dict) else {},
        messages=messages,
    )


def history_outputs(entry: HistoryEntry) -> list[OutputFile]:
    """Every file a finished prompt's history lists, the only ones we may fetch through /view."""
    files: list[OutputFile] = []
    for node_id, node_output in entry.outputs.items():
        for kind, items in node_output.items():
            if not isinstance(items, list):
                continue
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("filename"), str):
                    files.append(
                        OutputFile(
                            node_id=str(node_id),
                            kind=str(kind),
                            filename=item["filename"],
                            subfolder=str(item.get("subfolder") or ""),
                            type=str(item.get("type") or "output"),
                        )
                    )
    return files
