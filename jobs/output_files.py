"""Output files on their way from ComfyUI's /view into the project's storage.

Everything ComfyUI says about a file (its name, subfolder, type) is untrusted: it is kept only to
show and to fetch again, cut to the database's column widths, and the stored file gets a name the
project generates with the extension of what its bytes turned out to be (assets.media_types).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

from django.core.files.base import File

from assets.media_types import SNIFF_BYTES, MediaType, sniff
from assets.serving import safe_stem
from comfyui import OutputFile
from jobs.models import Job, JobOutput, column_width


class ViewStream(File):
    """A /view download as a File that a Django storage writes chunk by chunk as it arrives: no
    temporary copy first (a 2 GiB output briefly took 4 GiB of disk that way).

    Read once, from the start: `head()` peeks at the first bytes without losing them.
    """

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__(None, name="output")
        self._chunks = chunks
        self._pending = b""  # read from ComfyUI, not yet handed on
        self.bytes_read = 0

    def head(self) -> bytes:
        while len(self._pending) < SNIFF_BYTES:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._pending += chunk
            self.bytes_read += len(chunk)
        return self._pending[:SNIFF_BYTES]

    def media_type(self) -> MediaType:
        return sniff(self.head())

    def chunks(self, chunk_size: int | None = None) -> Iterator[bytes]:
        # What FileSystemStorage writes from; ComfyUI's own chunk sizes are fine for it.
        if self._pending:
            pending, self._pending = self._pending, b""
            yield pending
        for chunk in self._chunks:
            self.bytes_read += len(chunk)
            yield chunk

    def read(self, size: int = -1) -> bytes:
        # For storages that read() instead (remote object stores).
        while size < 0 or len(self._pending) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._pending += chunk
            self.bytes_read += len(chunk)
        cut = len(self._pending) if size < 0 else size
        data, self._pending = self._pending[:cut], self._pending[cut:]
        return data

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks()

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()  # ends the /view generator, which closes its HTTP response


# What names one output among a job's: (node_id, comfy_subfolder, comfy_filename, comfy_type).
OutputKey = tuple[str, str, str, str]


def output_key(output: OutputFile) -> OutputKey:
    """The columns that name one output of a job, each cut to its column's width (a name longer
    than that keeps a hash of the whole, so two long names never become one)."""
    return (
        fitted(output.node_id, _width("node_id")),
        fitted(output.subfolder, _width("comfy_subfolder")),
        fitted(output.filename, _width("comfy_filename")),
        fitted(output.type, _width("comfy_type")),
    )


def stored_key(record: JobOutput) -> OutputKey:
    return record.node_id, record.comfy_subfolder, record.comfy_filename, record.comfy_type


def output_identity(job: Job, key: OutputKey) -> dict[str, Any]:
    """The output's row's naming columns (its output_key), with its job."""
    node_id, subfolder, filename, kind = key
    return {
        "job": job,
        "node_id": node_id,
        "comfy_subfolder": subfolder,
        "comfy_filename": filename,
        "comfy_type": kind,
    }


def output_kind(output: OutputFile) -> str:
    return fitted(output.kind, _width("kind"))


def output_label(output: OutputFile) -> str:
    """How the timeline names an output ComfyUI listed: node, subfolder and file name, bounded."""
    path = "/".join(part for part in (output.subfolder, output.filename) if part)
    return fitted(f"#{output.node_id} {path}", 300)


def download_name(comfy_filename: str, media_type: MediaType) -> str:
    """The name a browser saves an output as: ComfyUI's stem, tamed, with the extension of what the
    file really is (x.html that is not media downloads as x.bin)."""
    return f"{safe_stem(comfy_filename, 'output')}.{media_type.extension}"


def fitted(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:12]
    return f"{text[: width - 14]}~{digest}"


def _width(field: str) -> int:
    return column_width(JobOutput, field)
