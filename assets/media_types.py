"""What a file is, judged by its first bytes, never by its name: ComfyUI's outputs and users' input assets.

A ComfyUI output named x.html or x.svg, served with the type its name suggests, ran its script on
the project's origin with the session of whoever opened it (docs/HAZARDS.md); an upload named
x.png can be an HTML page just the same. So the type comes from the content, and only inert media
(raster images, video, audio) are ever shown inline; everything else is a download of
`application/octet-stream`. No Django here: jobs (outputs) and assets (inputs) both use it.
"""

from __future__ import annotations

from dataclasses import dataclass

# Enough for every signature below (a Matroska header names its doctype within its first bytes).
SNIFF_BYTES = 64


@dataclass(frozen=True)
class MediaType:
    media_type: str
    extension: str

    @property
    def inline(self) -> bool:
        return self.media_type in INLINE_MEDIA_TYPES

    @property
    def raster_image(self) -> bool:
        return self.media_type in RASTER_IMAGE_TYPES


UNKNOWN = MediaType("application/octet-stream", "bin")
PNG = MediaType("image/png", "png")
JPEG = MediaType("image/jpeg", "jpg")
GIF = MediaType("image/gif", "gif")
WEBP = MediaType("image/webp", "webp")
MP4 = MediaType("video/mp4", "mp4")
QUICKTIME = MediaType("video/quicktime", "mov")
M4A = MediaType("audio/mp4", "m4a")
WEBM = MediaType("video/webm", "webm")
MATROSKA = MediaType("video/x-matroska", "mkv")
WAV = MediaType("audio/wav", "wav")
FLAC = MediaType("audio/flac", "flac")
OGG = MediaType("audio/ogg", "ogg")
MP3 = MediaType("audio/mpeg", "mp3")

RASTER_IMAGES = (PNG, JPEG, GIF, WEBP)
RASTER_IMAGE_TYPES = frozenset(t.media_type for t in RASTER_IMAGES)
RASTER_IMAGE_EXTENSIONS = tuple(t.extension for t in RASTER_IMAGES)
# Types a browser renders without running anything: the only ones served inline.
INLINE_MEDIA_TYPES = RASTER_IMAGE_TYPES | frozenset(
    t.media_type for t in (MP4, QUICKTIME, M4A, WEBM, MATROSKA, WAV, FLAC, OGG, MP3)
)


def sniff(head: bytes) -> MediaType:
    """The media type of a file that starts with `head` (at least SNIFF_BYTES of it, when it has them)."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return WEBP
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return WAV
    if head[4:8] == b"ftyp":
        return _iso_media(head[8:12])
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return WEBM if b"webm" in head[:SNIFF_BYTES] else MATROSKA
    if head.startswith(b"fLaC"):
        return FLAC
    if head.startswith(b"OggS"):
        return OGG
    if head.startswith(b"ID3") or _mpeg_audio_frame(head):
        return MP3
    return UNKNOWN


def _iso_media(brand: bytes) -> MediaType:
    """ISO base media (MP4, MOV, M4A) by its major brand."""
    if brand == b"qt  ":
        return QUICKTIME
    if brand in (b"M4A ", b"M4B "):
        return M4A
    return MP4


def _mpeg_audio_frame(head: bytes) -> bool:
    """An MPEG audio Layer III frame header: 11 sync bits, a known version, layer III."""
    if len(head) < 2 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version = (head[1] >> 3) & 0b11
    layer = (head[1] >> 1) & 0b11
    return version != 0b01 and layer == 0b01
