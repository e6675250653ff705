"""Stored files as HTTP responses that can never run on the project's origin: job outputs (from a
GPU machine) and input assets (from users) alike.

A file's type is what its bytes are (sniffed again when served, so a file stored before types were
sniffed is judged the same way); only inert media are shown inline, anything else downloads as
`application/octet-stream`; every response forbids sniffing and sandboxes whatever a browser might
still make of it (docs/HAZARDS.md).
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import BinaryIO

from django.core.files import File
from django.db.models.fields.files import FieldFile
from django.http import FileResponse, Http404

from assets.media_types import INLINE_MEDIA_TYPES, SNIFF_BYTES, UNKNOWN, sniff

# A document in a sandbox without allow-scripts cannot run script, and is its own opaque origin: no
# cookies, no storage, no same-origin requests, whatever it was.
UNTRUSTED_CONTENT_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox; default-src 'none'",
}

# Every type a stored file is served as: inert media inline, anything else as an attachment.
SERVED_MEDIA_TYPES = (*sorted(INLINE_MEDIA_TYPES), UNKNOWN.media_type)


def inert_file_response(handle: BinaryIO | File, *, download_stem: str) -> FileResponse:
    """`handle` served as what its bytes are: inline when inert media, else an attachment of
    `application/octet-stream`; saved as `<download_stem>.<extension of what it is>`."""
    head = handle.read(SNIFF_BYTES)
    handle.seek(0)
    media = sniff(head)
    if not media.inline:
        media = UNKNOWN
    response = FileResponse(
        handle,
        content_type=media.media_type,
        as_attachment=not media.inline,
        filename=f"{download_stem}.{media.extension}",
    )
    return untrusted(response)


def stored_file_response(stored: FieldFile, *, name: str, default_stem: str, what: str) -> FileResponse:
    """A stored file (an asset, an output) served inert, or a 404 when storage no longer has it."""
    try:
        handle = stored.open("rb")
    except FileNotFoundError as exc:
        raise Http404(f"the {what} is no longer in storage") from exc
    return inert_file_response(handle, download_stem=safe_stem(name, default_stem))


def untrusted(response: FileResponse) -> FileResponse:
    for header, value in UNTRUSTED_CONTENT_HEADERS.items():
        response[header] = value
    return response


def safe_stem(name: str, default: str) -> str:
    """A name someone else chose (ComfyUI, a user), tamed for a download: its stem in safe ASCII
    characters, at most 100 of them (x.html that is not media downloads as x.bin)."""
    stem = PurePosixPath(name.replace("\\", "/")).stem
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in stem).strip(".")
    return safe[:100] or default
