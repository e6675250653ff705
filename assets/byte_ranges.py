"""The HTTP Range header of a download (RFC 9110, section 14), read for one range only.

A video player asks for the piece it needs (`bytes=1048576-`) to seek. A request for several ranges at
once (a multipart/byteranges answer) is served as the whole file, as the RFC allows a server to do:
it costs a server many reads and answers for one request, and no player needs it.
"""

from __future__ import annotations

from dataclasses import dataclass

# A longer header is no single range: ignored, the whole file is served.
MAX_HEADER_CHARS = 100


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive, as in Content-Range

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


class RangeNotSatisfiable(Exception):
    """The one range asked for lies wholly past the file's end: 416, with the file's length."""


def requested_range(header: str | None, size: int) -> ByteRange | None:
    """The one byte range `header` asks of a file of `size` bytes, or None to serve the whole file
    (no header, another unit, several ranges, or a header that cannot be read, which the RFC says to
    ignore). Raises RangeNotSatisfiable for a range that starts past the end."""
    if not header or len(header) > MAX_HEADER_CHARS:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not all(part == "" or (part.isascii() and part.isdigit()) for part in (first, last)):
        return None
    if first == "":
        if last == "":
            return None
        suffix = int(last)  # the last N bytes
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable
        return ByteRange(max(size - suffix, 0), size - 1)
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # invalid: ignored
    if start >= size:
        raise RangeNotSatisfiable
    return ByteRange(start, min(end, size - 1))
