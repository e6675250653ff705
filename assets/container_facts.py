"""Video and audio containers, read as far as their headers say how big and how long they are.

ISO base media (MP4, MOV): the `moov` box wherever it is (at the end, for files written without
"faststart"), its `mvhd` (duration), and for the video track `stsd` (coded width and height),
`tkhd` (display size, when `stsd` has none) and `stsz` (how many frames). Matroska/WebM: the
Segment's Info (duration) and Tracks (the video track's pixel size) before the first Cluster; a
WebM does not say how many frames it has without reading them all, so it is bounded by its
duration. WAV and FLAC: their duration. A field that is absent stays None.
"""

from __future__ import annotations

import struct
from io import BytesIO
from typing import BinaryIO

# The largest `moov`, Info or Tracks read into memory: a long video's sample tables are a few MB.
MAX_HEADER_BYTES = 32 * 1024 * 1024
MAX_BOXES = 100_000

Facts = tuple[int | None, int | None, int | None, float | None]  # width, height, frames, seconds


class Truncated(ValueError):
    """The file ends inside a header, or a header is larger than is ever read."""


def read_exact(handle: BinaryIO, size: int) -> bytes:
    if size > MAX_HEADER_BYTES:
        raise Truncated(f"a header of {size} bytes; at most {MAX_HEADER_BYTES} are read")
    data = handle.read(size)
    if len(data) < size:
        raise Truncated("the file ends inside a header")
    return data


# --- ISO base media: MP4, MOV ------------------------------------------------------------------

_CONTAINER_BOXES = frozenset({b"moov", b"trak", b"mdia", b"minf", b"stbl"})


def iso_media(handle: BinaryIO) -> Facts:
    moov = _top_level_box(handle, b"moov")
    if moov is None:
        raise Truncated("no moov box: the file has no index of its tracks")
    seconds: float | None = None
    facts: Facts = (None, None, None, None)
    for kind, payload in _boxes(moov):
        if kind == b"mvhd":
            seconds = _mvhd_seconds(payload)
        elif kind == b"trak":
            track = _video_track(payload)
            if track is not None and facts[0] is None:
                facts = track
    width, height, frames, _ = facts
    return width, height, frames, seconds


def _top_level_box(handle: BinaryIO, wanted: bytes) -> bytes | None:
    handle.seek(0, 2)
    end = handle.tell()
    position = 0
    for _ in range(MAX_BOXES):
        if position + 8 > end:
            return None
        handle.seek(position)
        size, kind = struct.unpack(">I4s", read_exact(handle, 8))
        header = 8
        if size == 1:
            size = struct.unpack(">Q", read_exact(handle, 8))[0]
            header = 16
        elif size == 0:
            size = end - position
        if size < header:
            raise Truncated(f"a box {kind!r} smaller than its header")
        if kind == wanted:
            return read_exact(handle, size - header)
        position += size
    return None


def _boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    """The boxes in `data`, with the children of container boxes flattened in after their parent."""
    found: list[tuple[bytes, bytes]] = []
    position = 0
    while position + 8 <= len(data) and len(found) < MAX_BOXES:
        size, kind = struct.unpack_from(">I4s", data, position)
        header = 8
        if size == 1:
            size = struct.unpack_from(">Q", data, position + 8)[0]
            header = 16
        elif size == 0:
            size = len(data) - position
        if size < header or position + size > len(data):
            raise Truncated(f"a box {kind!r} larger than its parent")
        payload = data[position + header : position + size]
        found.append((kind, payload))
        position += size
    return found


def _mvhd_seconds(payload: bytes) -> float | None:
    if payload[0] == 1:
        timescale, duration = struct.unpack_from(">IQ", payload, 20)
    else:
        timescale, duration = struct.unpack_from(">II", payload, 12)
    return duration / timescale if timescale else None


def _video_track(trak: bytes) -> Facts | None:
    """(width, height, frames, None) of a video track; None for other tracks."""
    boxes = _flatten(trak)
    handler = boxes.get(b"hdlr")
    if handler is None or handler[8:12] != b"vide":
        return None
    width = height = None
    stsd = boxes.get(b"stsd")
    if stsd is not None and len(stsd) >= 8 + 36:
        # The first sample entry (a VisualSampleEntry): its coded width and height.
        width, height = struct.unpack_from(">HH", stsd, 8 + 32)
    tkhd = boxes.get(b"tkhd")
    if (not width or not height) and tkhd is not None and len(tkhd) >= 8:
        display_width, display_height = struct.unpack_from(">II", tkhd, len(tkhd) - 8)
        width, height = display_width >> 16, display_height >> 16
    stsz = boxes.get(b"stsz")
    frames = struct.unpack_from(">I", stsz, 8)[0] if stsz is not None and len(stsz) >= 12 else None
    # A fragmented MP4 lists its samples in fragments, not here: frames unknown, not zero.
    return width or None, height or None, frames or None, None


def _flatten(data: bytes) -> dict[bytes, bytes]:
    """The first box of each kind, searched through the container boxes."""
    found: dict[bytes, bytes] = {}
    pending = [data]
    while pending:
        for kind, payload in _boxes(pending.pop()):
            found.setdefault(kind, payload)
            if kind in _CONTAINER_BOXES:
                pending.append(payload)
    return found


# --- Matroska, WebM --------------------------------------------------------------------------------

_SEGMENT, _INFO, _TRACKS, _CLUSTER = 0x18538067, 0x1549A966, 0x1654AE6B, 0x1F43B675
_TIMESTAMP_SCALE, _DURATION = 0x2AD7B1, 0x4489
_TRACK_ENTRY, _TRACK_TYPE, _VIDEO, _PIXEL_WIDTH, _PIXEL_HEIGHT = 0xAE, 0x83, 0xE0, 0xB0, 0xBA
_VIDEO_TRACK = 1


def matroska(handle: BinaryIO) -> Facts:
    handle.seek(0)
    _ebml, ebml_size = _element_header(handle)
    handle.seek(ebml_size, 1)
    segment_id, _segment_size = _element_header(handle)
    if segment_id != _SEGMENT:
        raise Truncated("no Matroska Segment after the EBML header")
    seconds: float | None = None
    size: tuple[int, int] | None = None
    for _ in range(MAX_BOXES):
        try:
            element, length = _element_header(handle)
        except Truncated:
            break
        if element == _CLUSTER or length < 0:
            break  # the media itself (or an element of unknown size): the headers are behind us
        if element == _INFO:
            seconds = _info_seconds(_ebml_children(read_exact(handle, length)))
        elif element == _TRACKS:
            size = _video_size(_ebml_children(read_exact(handle, length)))
        else:
            handle.seek(length, 1)
        if seconds is not None and size is not None:
            break
    width, height = size or (None, None)
    return width, height, None, seconds


def _element_header(handle: BinaryIO) -> tuple[int, int]:
    """(id, size) of the next EBML element; size -1 when the element says it is of unknown size."""
    element, _ = _vint(handle, keep_marker=True)
    size, all_ones = _vint(handle, keep_marker=False)
    return element, -1 if all_ones else size


def _vint(handle: BinaryIO, *, keep_marker: bool) -> tuple[int, bool]:
    first = read_exact(handle, 1)[0]
    if first == 0:
        raise Truncated("an EBML number longer than 8 bytes")
    length = 8 - first.bit_length() + 1
    raw = first if keep_marker else first & (0xFF >> length)
    rest = read_exact(handle, length - 1)
    value = int.from_bytes(bytes([raw]) + rest, "big")
    return value, value == (1 << (7 * length)) - 1 and not keep_marker


def _ebml_children(data: bytes) -> list[tuple[int, bytes]]:
    stream = BytesIO(data)
    children: list[tuple[int, bytes]] = []
    while stream.tell() < len(data) and len(children) < MAX_BOXES:
        element, length = _element_header(stream)
        if length < 0:
            break
        children.append((element, read_exact(stream, length)))
    return children


def _info_seconds(children: list[tuple[int, bytes]]) -> float | None:
    scale = 1_000_000  # nanoseconds per timestamp unit, Matroska's default
    duration: float | None = None
    for element, payload in children:
        if element == _TIMESTAMP_SCALE:
            scale = int.from_bytes(payload, "big")
        elif element == _DURATION and len(payload) in (4, 8):
            duration = struct.unpack(">f" if len(payload) == 4 else ">d", payload)[0]
    return duration * scale / 1e9 if duration is not None else None


def _video_size(tracks: list[tuple[int, bytes]]) -> tuple[int, int] | None:
    for element, payload in tracks:
        if element != _TRACK_ENTRY:
            continue
        entry = _ebml_children(payload)
        kinds = [int.from_bytes(p, "big") for e, p in entry if e == _TRACK_TYPE]
        video = next((p for e, p in entry if e == _VIDEO), None)
        if kinds == [_VIDEO_TRACK] and video is not None:
            fields = {e: int.from_bytes(p, "big") for e, p in _ebml_children(video)}
            if fields.get(_PIXEL_WIDTH) and fields.get(_PIXEL_HEIGHT):
                return fields[_PIXEL_WIDTH], fields[_PIXEL_HEIGHT]
    return None


# --- audio -------------------------------------------------------------------------------------------


def wav_seconds(handle: BinaryIO) -> float | None:
    handle.seek(12)
    byte_rate = None
    for _ in range(MAX_BOXES):
        header = handle.read(8)
        if len(header) < 8:
            return None
        kind, length = struct.unpack("<4sI", header)
        if kind == b"fmt ":
            byte_rate = struct.unpack_from("<I", read_exact(handle, 16), 8)[0]
            handle.seek(length - 16 + (length & 1), 1)
        elif kind == b"data":
            return length / byte_rate if byte_rate else None
        else:
            handle.seek(length + (length & 1), 1)
    return None


def flac_seconds(handle: BinaryIO) -> float | None:
    handle.seek(4)
    block_type = read_exact(handle, 4)[0] & 0x7F
    if block_type != 0:
        raise Truncated("a FLAC stream must start with its STREAMINFO block")
    info = read_exact(handle, 34)
    bits = int.from_bytes(info[10:18], "big")
    sample_rate = bits >> 44
    total_samples = bits & ((1 << 36) - 1)
    return total_samples / sample_rate if sample_rate and total_samples else None
