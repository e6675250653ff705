"""What an upload holds, read from its headers: size in pixels, frames, seconds. No Django, no Pillow.

Pillow is a development dependency only (the simulator draws with it); the product reads the few
header fields it bounds itself: PNG's IHDR (and APNG's acTL), JPEG's SOF, GIF's screen and image
descriptors, WebP's VP8/VP8L/VP8X; the containers of video and audio are in container_facts.py.
Nothing is decoded: a header that lies about its size is bounded by what it says, and a file whose
header cannot be read is refused (assets.intake), never passed on to a GPU machine to find out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

from assets import container_facts
from assets.media_types import FLAC, GIF, JPEG, MP4, PNG, QUICKTIME, WAV, WEBM, WEBP, MediaType

# A header walk stops after this many chunks, segments or blocks: a file made of millions of empty
# ones must not keep a request busy.
MAX_WALK = 100_000


class UnreadableHeader(ValueError):
    """The header ends early or says something impossible."""


@dataclass(frozen=True)
class MediaFacts:
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    seconds: float | None = None

    @property
    def pixels(self) -> int | None:
        return self.width * self.height if self.width is not None and self.height is not None else None


def media_facts(handle: BinaryIO, media: MediaType) -> MediaFacts:
    """The facts of a file of a sniffed type; UnreadableHeader when its header cannot be read."""
    handle.seek(0)
    try:
        if media == PNG:
            return _png(handle)
        if media == JPEG:
            return _jpeg(handle)
        if media == GIF:
            return _gif(handle)
        if media == WEBP:
            return _webp(handle)
        if media in (MP4, QUICKTIME):
            return MediaFacts(*container_facts.iso_media(handle))
        if media == WEBM:
            return MediaFacts(*container_facts.matroska(handle))
        if media == WAV:
            return MediaFacts(seconds=container_facts.wav_seconds(handle))
        if media == FLAC:
            return MediaFacts(seconds=container_facts.flac_seconds(handle))
    except (struct.error, container_facts.Truncated) as exc:
        raise UnreadableHeader(str(exc)) from exc
    finally:
        handle.seek(0)
    return MediaFacts()  # MP3, OGG: no header field worth trusting; bounded by their bytes


def _read(handle: BinaryIO, size: int) -> bytes:
    return container_facts.read_exact(handle, size)


def _png(handle: BinaryIO) -> MediaFacts:
    handle.seek(8)
    length, kind = struct.unpack(">I4s", _read(handle, 8))
    if kind != b"IHDR" or length < 8:
        raise UnreadableHeader("a PNG must start with its IHDR chunk")
    width, height = struct.unpack(">II", _read(handle, 8))
    handle.seek(length - 8 + 4, 1)  # the rest of IHDR and its CRC
    frames = 1
    for _ in range(MAX_WALK):
        header = handle.read(8)
        if len(header) < 8:
            break
        length, kind = struct.unpack(">I4s", header)
        if kind == b"acTL":  # an animated PNG says how many frames it has before its image data
            frames = struct.unpack(">I", _read(handle, 4))[0]
            break
        if kind in (b"IDAT", b"IEND"):
            break
        handle.seek(length + 4, 1)
    return MediaFacts(width, height, frames)


# Start-of-frame markers (baseline, progressive, lossless, arithmetic): they carry the size.
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# Markers with no length after them.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xDA)})


def _jpeg(handle: BinaryIO) -> MediaFacts:
    handle.seek(2)
    for _ in range(MAX_WALK):
        if _read(handle, 1) != b"\xff":
            raise UnreadableHeader("a JPEG segment does not start with 0xFF")
        marker = _read(handle, 1)[0]
        while marker == 0xFF:  # fill bytes
            marker = _read(handle, 1)[0]
        if marker in (0xD9, 0xDA):  # end of image, or start of scan with no frame header before it
            break
        if marker in _JPEG_STANDALONE:
            continue
        (length,) = struct.unpack(">H", _read(handle, 2))
        if length < 2:
            raise UnreadableHeader("a JPEG segment shorter than its own length field")
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">xHH", _read(handle, 5))
            return MediaFacts(width, height, 1)
        handle.seek(length - 2, 1)
    raise UnreadableHeader("no JPEG frame header (SOF) before the image data")


def _gif(handle: BinaryIO) -> MediaFacts:
    handle.seek(6)
    width, height, packed = struct.unpack("<HHBxx", _read(handle, 7))
    if packed & 0x80:
        handle.seek(3 * 2 ** ((packed & 7) + 1), 1)  # the global colour table
    frames = 0
    for _ in range(MAX_WALK * 10):
        introducer = handle.read(1)
        if introducer in (b"", b"\x3b"):  # the end (a GIF cut short still shows what it has)
            break
        if introducer == b"\x2c":  # an image: its own size may exceed the logical screen's
            _left, _top, frame_width, frame_height, packed = struct.unpack("<HHHHB", _read(handle, 9))
            width, height = max(width, frame_width), max(height, frame_height)
            if packed & 0x80:
                handle.seek(3 * 2 ** ((packed & 7) + 1), 1)
            handle.seek(1, 1)  # LZW minimum code size
            frames += 1
        elif introducer == b"\x21":  # an extension: its label, then sub-blocks
            handle.seek(1, 1)
        else:
            raise UnreadableHeader(f"unknown GIF block {introducer!r}")
        _skip_gif_sub_blocks(handle)
    return MediaFacts(width, height, max(frames, 1))


def _skip_gif_sub_blocks(handle: BinaryIO) -> None:
    while True:
        size = handle.read(1)
        if not size or size == b"\x00":
            return
        handle.seek(size[0], 1)


def _webp(handle: BinaryIO) -> MediaFacts:
    handle.seek(12)
    kind, length = struct.unpack("<4sI", _read(handle, 8))
    if kind == b"VP8 ":
        frame = _read(handle, 10)
        if frame[3:6] != b"\x9d\x01\x2a":
            raise UnreadableHeader("a lossy WebP without the VP8 start code")
        width, height = struct.unpack("<HH", frame[6:10])
        return MediaFacts(width & 0x3FFF, height & 0x3FFF, 1)
    if kind == b"VP8L":
        data = _read(handle, 5)
        if data[0] != 0x2F:
            raise UnreadableHeader("a lossless WebP without its signature byte")
        bits = int.from_bytes(data[1:5], "little")
        return MediaFacts((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, 1)
    if kind == b"VP8X":
        data = _read(handle, 10)
        width = int.from_bytes(data[4:7], "little") + 1
        height = int.from_bytes(data[7:10], "little") + 1
        animated = bool(data[0] & 0x02)
        handle.seek(length - 10 + (length & 1), 1)
        return MediaFacts(width, height, _webp_frames(handle) if animated else 1)
    raise UnreadableHeader(f"unknown WebP chunk {kind!r}")


def _webp_frames(handle: BinaryIO) -> int:
    frames = 0
    for _ in range(MAX_WALK):
        header = handle.read(8)
        if len(header) < 8:
            break
        kind, length = struct.unpack("<4sI", header)
        frames += kind == b"ANMF"
        handle.seek(length + (length & 1), 1)
    return max(frames, 1)
