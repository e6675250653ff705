"""The one ComfyUI client: HTTP (requests) and websocket (websocket-client).

No Django here. It takes a base URL and timeouts, returns small typed objects, and raises one
error type, `ComfyUIError`, whose `retryable` says whether trying again can help.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import requests
import websocket

PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
IMAGE_TYPES = {1: "image/jpeg", 2: "image/png"}


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
    completed: bool
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
            metadata = json.loads(frame[8 : 8 + length])
        except ValueError:
            return None
        media_type = metadata.get("image_type") or "image/jpeg"
        return PreviewFrame(image=frame[8 + length :], media_type=media_type, metadata=metadata)
    return None


def parse_text_frame(text: str) -> WsMessage | None:
    try:
        raw = json.loads(text)
    except ValueError:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        return None
    data = raw.get("data")
    return WsMessage(type=raw["type"], data=data if isinstance(data, dict) else {})


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
                            kind=kind,
                            filename=item["filename"],
                            subfolder=str(item.get("subfolder") or ""),
                            type=str(item.get("type") or "output"),
                        )
                    )
    return files


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
            raise ComfyUIError(f"websocket lost: {exc}", kind="unreachable", retryable=True) from exc
        if opcode == websocket.ABNF.OPCODE_TEXT:
            return parse_text_frame(payload.decode("utf-8", errors="replace"))
        if opcode == websocket.ABNF.OPCODE_BINARY:
            return parse_binary_frame(payload)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            raise ComfyUIError("websocket closed by ComfyUI", kind="unreachable", retryable=True)
        return None

    def messages(self, timeout: float) -> Iterator[WsMessage | PreviewFrame | None]:
        while True:
            yield self.receive(timeout)

    def close(self) -> None:
        try:
            self._conn.close(timeout=1)
        except (websocket.WebSocketException, OSError):
            pass


class ComfyUIClient:
    def __init__(self, base_url: str, *, timeout: float = 10.0, connect_timeout: float = 3.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._session = requests.Session()

    # --- HTTP --------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = f"{self.base_url}{path}"
        try:
            response = self._session.request(
                method, url, timeout=(self.connect_timeout, self.timeout), **kwargs
            )
        except requests.Timeout as exc:
            raise ComfyUIError(f"{method} {path}: timed out", kind="unreachable", retryable=True) from exc
        except requests.RequestException as exc:
            raise ComfyUIError(
                f"{method} {path}: cannot reach ComfyUI at {self.base_url} ({exc.__class__.__name__})",
                kind="unreachable",
                retryable=True,
            ) from exc
        if response.status_code >= 500:
            raise ComfyUIError(
                f"{method} {path}: ComfyUI answered {response.status_code}: {response.text[:500]}",
                kind="server",
                retryable=True,
                status=response.status_code,
                body=response.text[:2000],
            )
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError as exc:
            raise ComfyUIError(
                f"{method} {path}: answer is not JSON ({response.status_code}): {response.text[:200]}",
                kind="protocol",
                retryable=True,
                status=response.status_code,
            ) from exc
        if response.status_code >= 400:
            raise ComfyUIError(
                _rejection_message(body, f"{method} {path}: ComfyUI answered {response.status_code}"),
                kind="rejected",
                retryable=False,
                status=response.status_code,
                body=body,
            )
        return body

    def submit(
        self, workflow: dict[str, Any], *, prompt_id: str, client_id: str, extra_data: dict | None = None
    ) -> SubmitResult:
        payload: dict[str, Any] = {"prompt": workflow, "client_id": client_id, "prompt_id": prompt_id}
        if extra_data:
            payload["extra_data"] = extra_data
        body = self._json("POST", "/prompt", json=payload)
        if not isinstance(body, dict) or "prompt_id" not in body:
            raise ComfyUIError("POST /prompt: no prompt_id in the answer", kind="protocol", retryable=True)
        return SubmitResult(
            prompt_id=str(body["prompt_id"]),
            number=int(body.get("number") or 0),
            node_errors=body.get("node_errors") or {},
        )

    def queue(self) -> QueueSnapshot:
        body = self._json("GET", "/queue")
        if not isinstance(body, dict):
            raise ComfyUIError("GET /queue: unexpected answer", kind="protocol", retryable=True)
        return QueueSnapshot(
            running=[str(item[1]) for item in body.get("queue_running", []) if len(item) > 1],
            pending=[str(item[1]) for item in body.get("queue_pending", []) if len(item) > 1],
        )

    def history(self, prompt_id: str) -> HistoryEntry | None:
        """The prompt's history entry, or None when ComfyUI has none (yet, or any more)."""
        body = self._json("GET", f"/history/{prompt_id}")
        raw = body.get(prompt_id) if isinstance(body, dict) else None
        if not isinstance(raw, dict):
            return None
        status = raw.get("status") or {}
        messages = [
            (str(m[0]), m[1] if isinstance(m[1], dict) else {})
            for m in status.get("messages", [])
            if isinstance(m, list) and len(m) == 2
        ]
        return HistoryEntry(
            prompt_id=prompt_id,
            status_str=str(status.get("status_str") or ""),
            completed=bool(status.get("completed")),
            outputs=raw.get("outputs") or {},
            messages=messages,
        )

    def object_info(self) -> dict[str, Any]:
        body = self._json("GET", "/object_info")
        if not isinstance(body, dict):
            raise ComfyUIError("GET /object_info: unexpected answer", kind="protocol", retryable=True)
        return body

    def system_stats(self) -> dict[str, Any]:
        return self._json("GET", "/system_stats")

    def view(self, output: OutputFile, *, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Stream an output file. Only pass values taken from the prompt's own history."""
        query = {"filename": output.filename, "subfolder": output.subfolder, "type": output.type}
        response = self._request("GET", "/view", params=query, stream=True)
        if response.status_code != 200:
            response.close()
            raise ComfyUIError(
                f"GET /view {output.filename}: ComfyUI answered {response.status_code}",
                kind="rejected",
                retryable=False,
                status=response.status_code,
            )
        try:
            yield from response.iter_content(chunk_size=chunk_size)
        except requests.RequestException as exc:
            raise ComfyUIError(
                f"GET /view {output.filename}: download broke off", kind="unreachable", retryable=True
            ) from exc
        finally:
            response.close()

    def interrupt(self, prompt_id: str) -> None:
        """Stop the prompt if it is the running one (ComfyUI ignores it otherwise)."""
        self._request("POST", "/interrupt", json={"prompt_id": prompt_id})

    def delete_from_queue(self, prompt_ids: list[str]) -> None:
        self._request("POST", "/queue", json={"delete": prompt_ids})

    # --- websocket ---------------------------------------------------------------------------

    def ws_url(self, client_id: str) -> str:
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, f"{parts.path}/ws", urlencode({"clientId": client_id}), ""))

    def connect(self, client_id: str, *, preview_metadata: bool = True) -> ComfySocket:
        try:
            # websocket-client checks each text frame's UTF-8 in pure Python: about 1% of a core
            # per tracked job at ComfyUI's 200 messages a second, for nothing: parse_text_frame
            # decodes with errors="replace" anyway.
            conn = websocket.create_connection(
                self.ws_url(client_id),
                timeout=self.connect_timeout,
                enable_multithread=False,
                skip_utf8_validation=True,
            )
        except (websocket.WebSocketException, OSError) as exc:
            raise ComfyUIError(
                f"cannot open ComfyUI websocket at {self.base_url}: {exc}", kind="unreachable", retryable=True
            ) from exc
        if preview_metadata:
            # Ask for type-4 previews, which say which prompt and node they belong to.
            try:
                conn.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
            except (websocket.WebSocketException, OSError) as exc:
                raise ComfyUIError(f"websocket lost: {exc}", kind="unreachable", retryable=True) from exc
        return ComfySocket(conn)


def _rejection_message(body: Any, fallback: str) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        parts = [str(error.get("message") or error.get("type") or fallback)]
        if error.get("details"):
            parts.append(str(error["details"]))
        for node_id, node_error in (body.get("node_errors") or {}).items():
            for item in node_error.get("errors", []):
                parts.append(f"node {node_id}: {item.get('message')}: {item.get('details')}")
        return "; ".join(parts)
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    return fallback
