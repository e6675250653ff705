"""Stored files as HTTP responses that can never run on the project's origin: job outputs (from a
GPU machine) and input assets (from users) alike.

A file's type is what its bytes are (sniffed again when served, so a file stored before types were
sniffed is judged the same way); only inert media are shown inline, anything else downloads as
`application/octet-stream`; every response forbids sniffing and sandboxes whatever a browser might
still make of it (docs/HAZARDS.md). The caller checks permissions first; then the file is streamed
(one byte range at a time when a video player asks, on the filesystem and S3 alike) or, with
FILE_DOWNLOADS=redirect on S3, answered by a short-lived signed URL that carries the same type and
disposition: never a public bucket URL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import TypeVar

from django.conf import settings
from django.core.files.storage import Storage
from django.db.models.fields.files import FieldFile
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils.http import content_disposition_header

from assets.byte_ranges import ByteRange, RangeNotSatisfiable, requested_range
from assets.media_types import INLINE_MEDIA_TYPES, SNIFF_BYTES, UNKNOWN, sniff
from assets.object_store import signed_download_url, stored_chunks, stored_head

# A document in a sandbox without allow-scripts cannot run script, and is its own opaque origin: no
# cookies, no storage, no same-origin requests, whatever it was.
UNTRUSTED_CONTENT_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox; default-src 'none'",
}

# Every type a stored file is served as: inert media inline, anything else as an attachment.
SERVED_MEDIA_TYPES = (*sorted(INLINE_MEDIA_TYPES), UNKNOWN.media_type)


def stored_file_response(
    request: HttpRequest, stored: FieldFile, *, name: str, default_stem: str, what: str
) -> HttpResponseBase:
    """A stored file (an asset, an output, a thumbnail) served inert, or a 404 when storage no longer
    has it. The caller has checked that `request`'s user may see it."""
    if not stored:
        raise Http404(f"the {what} is no longer in storage")
    return storage_file_response(
        request, stored.storage, stored.name or "", download_stem=safe_stem(name, default_stem), what=what
    )


def storage_file_response(
    request: HttpRequest,
    storage: Storage,
    stored_name: str,
    *,
    download_stem: str,
    what: str,
    raster_only: bool = False,
) -> HttpResponseBase:
    """The file `stored_name` of `storage` as what its bytes are: inline when inert media, else an
    attachment of `application/octet-stream`, saved as `<download_stem>.<extension of what it is>`.
    Streamed with HTTP Range support, or (FILE_DOWNLOADS=redirect, S3) a redirect to a signed URL that
    carries the same type and disposition. `raster_only`: a 404 unless the bytes are a raster image."""
    try:
        head, size = stored_head(storage, stored_name, SNIFF_BYTES)
    except FileNotFoundError as exc:
        raise Http404(f"the {what} is no longer in storage") from exc
    media = sniff(head)
    if raster_only and not media.raster_image:
        raise Http404(f"no {what}")
    if not media.inline:
        media = UNKNOWN
    disposition = content_disposition_header(not media.inline, f"{download_stem}.{media.extension}") or ""
    if settings.FILE_DOWNLOADS == "redirect":
        url = signed_download_url(
            storage,
            stored_name,
            content_type=media.media_type,
            disposition=disposition,
            seconds=settings.FILE_DOWNLOAD_URL_SECONDS,
        )
        if url is not None:
            redirect = HttpResponseRedirect(url)
            redirect["Cache-Control"] = "no-store"  # the URL stops working soon; never reuse it
            return untrusted(redirect)
    return untrusted(_streamed(request, storage, stored_name, size, media.media_type, disposition))


def _streamed(
    request: HttpRequest, storage: Storage, stored_name: str, size: int, media_type: str, disposition: str
) -> HttpResponseBase:
    try:
        # If-Range names a version we cannot compare with (no ETag of ours): the whole file is right.
        header = None if request.headers.get("If-Range") else request.headers.get("Range")
        wanted = requested_range(header, size)
    except RangeNotSatisfiable:
        refused = HttpResponse(status=416)
        refused["Content-Range"] = f"bytes */{size}"
        refused["Accept-Ranges"] = "bytes"
        return refused
    part = wanted or ByteRange(0, size - 1)
    response = StreamingHttpResponse(
        _chunks(storage, stored_name, part), status=206 if wanted else 200, content_type=media_type
    )
    response["Content-Length"] = str(max(part.length, 0))
    response["Accept-Ranges"] = "bytes"
    response["Content-Disposition"] = disposition
    if wanted:
        response["Content-Range"] = wanted.content_range(size)
    return response


def _chunks(storage: Storage, stored_name: str, part: ByteRange) -> Iterator[bytes]:
    if part.length <= 0:  # an empty file
        return iter(())
    return stored_chunks(storage, stored_name, part.start, part.end)


Response = TypeVar("Response", bound=HttpResponseBase)


def untrusted(response: Response) -> Response:
    for header, value in UNTRUSTED_CONTENT_HEADERS.items():
        response[header] = value
    return response


def safe_stem(name: str, default: str) -> str:
    """A name someone else chose (ComfyUI, a user), tamed for a download: its stem in safe ASCII
    characters, at most 100 of them (x.html that is not media downloads as x.bin)."""
    stem = PurePosixPath(name.replace("\\", "/")).stem
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in stem).strip(".")
    return safe[:100] or default
