"""An upload past ASSET_MAX_BYTES is refused as it arrives, not after a second copy of it is written."""

from __future__ import annotations

from typing import Any

from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import HttpRequest

# What a multipart body carries besides the file: boundaries, part headers, the `name` field.
MULTIPART_OVERHEAD = 64 * 1024


class SizeLimitedUpload(FileUploadHandler):
    """First of the request's upload handlers: stops the upload once a file passes `limit` bytes.

    Django's own handlers after it would otherwise write the whole file (to memory, then to a
    temporary file) before anyone could look at its size. The rest of the body is read and dropped,
    so the client gets its 400 instead of a reset connection.
    """

    def __init__(self, request: HttpRequest, limit: int) -> None:
        super().__init__(request)
        self.limit = limit
        self.exceeded = False

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        if start + len(raw_data) > self.limit:
            self.exceeded = True
            raise StopUpload(connection_reset=False)
        return raw_data

    def file_complete(self, file_size: int) -> Any:
        return None  # the next handler makes the file


def limit_uploads(request: HttpRequest, limit: int) -> SizeLimitedUpload:
    """Put the limit in front of the request's upload handlers (before its body is read)."""
    handler = SizeLimitedUpload(request, limit)
    request.upload_handlers = [handler, *request.upload_handlers]
    return handler


def declared_too_large(request: HttpRequest, limit: int) -> bool:
    """The body says it is larger than any acceptable upload: refuse before reading it."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return False
    return length > limit + MULTIPART_OVERHEAD


def daphne_form_parsing_off() -> None:
    """Stop Twisted, under daphne, from parsing multipart and form POST bodies itself.

    Twisted's HTTP request reads such a body whole and parses it into `request.args` (which daphne
    never uses) before daphne passes the body on to Django: a second copy of every upload in memory
    (docs/HAZARDS.md), and a body it cannot parse is answered with a bare 400 that no view, log line
    or JSON error ever sees. Django parses the body itself, once, with the limits above.
    """
    try:
        from daphne.http_protocol import WebRequest  # type: ignore[import-untyped]  # daphne ships no types
    except ImportError:  # another ASGI server: nothing to turn off
        return
    if getattr(WebRequest, "form_parsing_off", False):
        return
    twisted_init = WebRequest.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        twisted_init(self, *args, **kwargs)
        self._parsePOSTFormSubmission = False  # twisted.web.http.Request's own switch

    WebRequest.__init__ = __init__
    WebRequest.form_parsing_off = True
