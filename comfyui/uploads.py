"""Files sent to ComfyUI's input folder (`POST /upload/image`), and the names ComfyUI answers with.

ComfyUI (server.py, `image_upload`) takes a multipart form: `image` (the file, named by its
filename), `type` (`input`), `subfolder` and `overwrite`. Without overwrite it keeps an existing
file of the same name and bytes (and answers its name), and renames a different one to
"name (1).png"; the answer `{"name", "subfolder", "type"}` says where the file is. Loaders take
"<subfolder>/<name>" for a file in a subfolder of the input folder (folder_paths.get_annotated_filepath).

A name is checked on the way out (ours: plain, no separators) and on the way back (ComfyUI's
answer is untrusted: a name that is a path, or another subfolder, is refused).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from comfyui.errors import ComfyUIError

# What we send: a plain ASCII file name, safe inside a quoted multipart header.
_OUR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_OUR_SUBFOLDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}(/[A-Za-z0-9][A-Za-z0-9._-]{0,99}){0,3}")


@dataclass(frozen=True)
class UploadedInput:
    """Where ComfyUI put an uploaded file."""

    name: str
    subfolder: str
    type: str

    @property
    def loader_value(self) -> str:
        """What a loader's input names it by: "<subfolder>/<name>" (relative to the input folder)."""
        return f"{self.subfolder}/{self.name}" if self.subfolder else self.name


def check_outgoing_name(filename: str, subfolder: str) -> None:
    if not _OUR_NAME.fullmatch(filename) or ".." in filename:
        raise ValueError(f"upload file name {filename!r} must be a plain ASCII name (letters, digits, . _ -)")
    if subfolder and (not _OUR_SUBFOLDER.fullmatch(subfolder) or ".." in subfolder):
        raise ValueError(f"upload subfolder {subfolder!r} must be a relative path of plain ASCII names")


def uploaded_input(answer: Any, *, subfolder: str, upload_type: str) -> UploadedInput:
    """ComfyUI's answer to an upload, refused unless it names a plain file in the folder we asked for."""
    if not isinstance(answer, dict) or not isinstance(answer.get("name"), str):
        raise ComfyUIError(f"POST /upload/image: unexpected answer {str(answer)[:200]}", retryable=False)
    name = answer["name"]
    if not _plain_answered_name(name):
        raise ComfyUIError(f"POST /upload/image: ComfyUI answered a path for a name: {name[:200]!r}", retryable=False)
    if answer.get("subfolder", "") != subfolder or answer.get("type", upload_type) != upload_type:
        raise ComfyUIError(
            f"POST /upload/image: ComfyUI put the file elsewhere ({str(answer)[:200]}), not in {subfolder!r}",
            retryable=False,
        )
    return UploadedInput(name=name, subfolder=subfolder, type=upload_type)


def _plain_answered_name(name: str) -> bool:
    # ComfyUI may add " (1)" to our name; anything that could leave the subfolder is refused.
    return (
        0 < len(name) <= 255
        and "/" not in name
        and "\\" not in name
        and ".." not in name
        and name.isprintable()
        and not name.startswith((" ", "."))
    )


class MultipartFileBody:
    """A multipart/form-data body streamed from a file of known size: requests sends it with a
    Content-Length (not chunked) and never holds the whole file in memory. Iterable once."""

    def __init__(
        self,
        *,
        fields: dict[str, str],
        file_field: str,
        filename: str,
        file: BinaryIO,
        size: int,
        file_content_type: str = "application/octet-stream",
        chunk_size: int = 1 << 20,
        on_chunk: Callable[[], None] | None = None,
    ) -> None:
        self.boundary = f"comfyui-upload-{uuid.uuid4().hex}"
        parts = [
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            for name, value in fields.items()
        ]
        parts.append(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{filename}"\r\n'
            f"Content-Type: {file_content_type}\r\n\r\n"
        )
        self._head = "".join(parts).encode()
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.file = file
        self.size = size
        self.chunk_size = chunk_size
        self.on_chunk = on_chunk

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return len(self._head) + self.size + len(self._tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self._head
        remaining = self.size
        while remaining > 0:
            chunk = self.file.read(min(self.chunk_size, remaining))
            if not chunk:
                # The length is already sent: the request cannot be completed honestly.
                raise ComfyUIError(f"the file to upload ended {remaining} bytes short of its size", retryable=False)
            remaining -= len(chunk)
            yield chunk
            if self.on_chunk is not None:
                self.on_chunk()
        yield self._tail
