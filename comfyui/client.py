"""The one ComfyUI client: HTTP (requests) and websocket (websocket-client).

No Django here. It takes a base URL and timeouts, returns small typed objects, and raises one
error type, `ComfyUIError`, whose `retryable` says whether trying again can help.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import requests
import websocket

from comfyui.errors import ComfyUIError, OutputTooLarge
from comfyui.protocol import HistoryEntry, OutputFile, QueueSnapshot, SubmitResult, parse_history_entry
from comfyui.untrusted import UnreadableJSON, clean_text, loads_untrusted
from comfyui.uploads import MultipartFileBody, UploadedInput, check_outgoing_name, uploaded_input
from comfyui.ws import ComfySocket

# A JSON answer larger than this is refused: /object_info of an installation with many custom
# node packs is a few MB; nothing ComfyUI answers legitimately comes near this.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
# A rejection names at most this many node errors in its message (the body keeps them all).
REJECTION_ITEMS = 20


class ComfyUIClient:
    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 3.0,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_answer_bytes = max_answer_bytes
        self._session = requests.Session()

    def clone(self) -> ComfyUIClient:
        """A client of the same server with its own connections, for another thread."""
        return ComfyUIClient(
            self.base_url,
            timeout=self.timeout,
            connect_timeout=self.connect_timeout,
            max_answer_bytes=self.max_answer_bytes,
        )

    # --- HTTP --------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One exchange, streamed. Redirects are never followed: a `/view` answering 302 made the
        worker fetch another host and store what it found as the job's output."""
        url = f"{self.base_url}{path}"
        try:
            response = self._session.request(
                method,
                url,
                timeout=(self.connect_timeout, self.timeout),
                allow_redirects=False,
                stream=True,
                **kwargs,
            )
        except requests.Timeout as exc:
            raise ComfyUIError(f"{method} {path}: timed out", retryable=True) from exc
        except requests.RequestException as exc:
            raise ComfyUIError(
                f"{method} {path}: cannot reach ComfyUI at {self.base_url} ({exc.__class__.__name__})",
                retryable=True,
            ) from exc
        if response.status_code >= 500:
            text = self._text_excerpt(response, 2000)
            raise ComfyUIError(
                f"{method} {path}: ComfyUI answered {response.status_code}: {text[:500]}",
                retryable=True,
                status=response.status_code,
                body=text,
            )
        if 300 <= response.status_code < 400:
            response.close()
            raise ComfyUIError(
                f"{method} {path}: ComfyUI answered a redirect ({response.status_code}), which is never followed",
                retryable=False,
                status=response.status_code,
            )
        return response

    def _body(self, method: str, path: str, response: requests.Response) -> bytes:
        """The whole answer, refused past `max_answer_bytes` (a GPU machine's answer is untrusted)."""
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_content(chunk_size=1 << 16):
                size += len(chunk)
                if size > self.max_answer_bytes:
                    raise ComfyUIError(
                        f"{method} {path}: answer larger than {self.max_answer_bytes} bytes", retryable=False
                    )
                chunks.append(chunk)
        except requests.RequestException as exc:
            raise ComfyUIError(f"{method} {path}: answer broke off", retryable=True) from exc
        finally:
            response.close()
        return b"".join(chunks)

    @staticmethod
    def _text_excerpt(response: requests.Response, limit: int) -> str:
        try:
            head = next(response.iter_content(chunk_size=limit), b"")
        except requests.RequestException:
            head = b""
        finally:
            response.close()
        return clean_text(head[:limit].decode("utf-8", "replace"))

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        raw = self._body(method, path, response)
        try:
            body = loads_untrusted(raw)
        except UnreadableJSON as exc:
            excerpt = clean_text(raw[:200].decode("utf-8", "replace"))
            raise ComfyUIError(
                f"{method} {path}: answer is not JSON ({response.status_code}): {excerpt}",
                retryable=True,
                status=response.status_code,
            ) from exc
        if response.status_code >= 400:
            raise ComfyUIError(
                _rejection_message(body, f"{method} {path}: ComfyUI answered {response.status_code}"),
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
            raise ComfyUIError("POST /prompt: no prompt_id in the answer", retryable=True)
        return SubmitResult(
            prompt_id=str(body["prompt_id"]),
            number=int(body.get("number") or 0),
            node_errors=body.get("node_errors") or {},
        )

    def queue(self) -> QueueSnapshot:
        body = self._json("GET", "/queue")
        if not isinstance(body, dict):
            raise ComfyUIError("GET /queue: unexpected answer", retryable=True)
        return QueueSnapshot(
            running=_queue_prompt_ids(body.get("queue_running")),
            pending=_queue_prompt_ids(body.get("queue_pending")),
        )

    def history(self, prompt_id: str) -> HistoryEntry | None:
        """The prompt's history entry, or None when ComfyUI has none (yet, or any more)."""
        body = self._json("GET", f"/history/{prompt_id}")
        return parse_history_entry(prompt_id, body)

    def object_info(self) -> dict[str, Any]:
        body = self._json("GET", "/object_info")
        if not isinstance(body, dict):
            raise ComfyUIError("GET /object_info: unexpected answer", retryable=True)
        return body

    def system_stats(self) -> dict[str, Any]:
        return self._json("GET", "/system_stats")

    def embeddings(self) -> list[str]:
        """The embedding names ComfyUI offers (GET /embeddings), bounded."""
        return _names(self._json("GET", "/embeddings"), "/embeddings")

    def models(self, folder: str | None = None) -> list[str]:
        """The model folders (GET /models), or the files of one folder (GET /models/<folder>), bounded."""
        path = "/models" if folder is None else f"/models/{quote(folder, safe='')}"
        return _names(self._json("GET", path), path)

    def view(self, output: OutputFile, *, max_bytes: int | None = None, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Stream an output file. Only pass values taken from the prompt's own history.

        Past `max_bytes` the download stops with `OutputTooLarge` (after yielding what fits).
        """
        query = {"filename": output.filename, "subfolder": output.subfolder, "type": output.type}
        response = self._request("GET", "/view", params=query)
        if response.status_code != 200:
            response.close()
            raise ComfyUIError(
                f"GET /view {output.filename}: ComfyUI answered {response.status_code}",
                retryable=False,
                status=response.status_code,
            )
        size = 0
        try:
            for chunk in response.iter_content(chunk_size=chunk_size):
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise OutputTooLarge(
                        f"GET /view {output.filename}: larger than the limit of {max_bytes} bytes", limit=max_bytes
                    )
                yield chunk
        except requests.RequestException as exc:
            raise ComfyUIError(f"GET /view {output.filename}: download broke off", retryable=True) from exc
        finally:
            response.close()

    def upload_image(
        self,
        file: BinaryIO,
        *,
        filename: str,
        size: int,
        subfolder: str = "",
        overwrite: bool = False,
        upload_type: str = "input",
        on_chunk: Callable[[], None] | None = None,
    ) -> UploadedInput:
        """Put a file into ComfyUI's input folder with `POST /upload/image` (images, and the videos
        and audio its loaders read from the same folder). Streams `size` bytes from `file`.

        `filename` and `subfolder` are ours (plain ASCII names, ValueError otherwise). Without
        `overwrite`, ComfyUI keeps a file of the same name and bytes and answers its name, or renames
        ours on a collision: use the answered name (`UploadedInput.loader_value`). `on_chunk` is
        called after each chunk sent (a heartbeat during a long upload). Any answer but 200 is a
        ComfyUIError, retryable only when ComfyUI was unreachable or answered 5xx.
        """
        check_outgoing_name(filename, subfolder)
        fields = {"type": upload_type, "subfolder": subfolder, "overwrite": "true" if overwrite else "false"}
        body = MultipartFileBody(
            fields=fields, file_field="image", filename=filename, file=file, size=size, on_chunk=on_chunk
        )
        path = "/upload/image"
        response = self._request("POST", path, data=body, headers={"Content-Type": body.content_type})
        if response.status_code != 200:
            text = self._text_excerpt(response, 500)
            raise ComfyUIError(
                f"POST {path} {filename}: ComfyUI answered {response.status_code}: {text[:300]}",
                retryable=False,
                status=response.status_code,
                body=text,
            )
        raw = self._body("POST", path, response)
        try:
            answer = loads_untrusted(raw)
        except UnreadableJSON as exc:
            raise ComfyUIError(f"POST {path}: answer is not JSON", retryable=True) from exc
        return uploaded_input(answer, subfolder=subfolder, upload_type=upload_type)

    def interrupt(self, prompt_id: str) -> None:
        """Stop the prompt if it is the running one (ComfyUI ignores it otherwise)."""
        self._request("POST", "/interrupt", json={"prompt_id": prompt_id}).close()

    def delete_from_queue(self, prompt_ids: list[str]) -> None:
        self._request("POST", "/queue", json={"delete": prompt_ids}).close()

    # --- websocket ---------------------------------------------------------------------------

    def ws_url(self, client_id: str) -> str:
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, f"{parts.path}/ws", urlencode({"clientId": client_id}), ""))

    def connect(self, client_id: str, *, preview_metadata: bool = True) -> ComfySocket:
        try:
            # websocket-client makes the handshake and sends; ComfySocket reads the frames itself.
            conn = websocket.create_connection(
                self.ws_url(client_id), timeout=self.connect_timeout, enable_multithread=False
            )
        except (websocket.WebSocketException, OSError) as exc:
            raise ComfyUIError(f"cannot open ComfyUI websocket at {self.base_url}: {exc}", retryable=True) from exc
        if preview_metadata:
            # Ask for type-4 previews, which say which prompt and node they belong to.
            try:
                conn.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
            except (websocket.WebSocketException, OSError) as exc:
                raise ComfyUIError(f"websocket lost: {exc}", retryable=True) from exc
        return ComfySocket(conn)


# A name list (embeddings, model folders or files) keeps at most this many names of at most this length.
MAX_LISTED_NAMES = 50_000
MAX_LISTED_NAME_CHARS = 512


def _names(body: Any, path: str) -> list[str]:
    """A list of names from ComfyUI: strings only, each bounded, at most MAX_LISTED_NAMES of them."""
    if not isinstance(body, list):
        raise ComfyUIError(f"GET {path}: unexpected answer", retryable=True)
    names = [clean_text(item) for item in body if isinstance(item, str) and len(item) <= MAX_LISTED_NAME_CHARS]
    return names[:MAX_LISTED_NAMES]


def _queue_prompt_ids(items: Any) -> list[str]:
    """Prompt ids of a `/queue` list: each item is [number, prompt_id, prompt, extra, outputs]."""
    if not isinstance(items, list):
        return []
    return [str(item[1]) for item in items if isinstance(item, list) and len(item) > 1]


def _rejection_message(body: Any, fallback: str) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        parts = [str(error.get("message") or error.get("type") or fallback)]
        if error.get("details"):
            parts.append(str(error["details"]))
        node_errors = body.get("node_errors")
        for node_id, node_error in node_errors.items() if isinstance(node_errors, dict) else ():
            items = node_error.get("errors") if isinstance(node_error, dict) else None
            for item in items if isinstance(items, list) else ():
                if isinstance(item, dict):
                    parts.append(f"node {node_id}: {item.get('message')}: {item.get('details')}")
                if len(parts) > REJECTION_ITEMS:
                    return "; ".join(parts) + "; ..."
        return "; ".join(parts)
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    return fallback
