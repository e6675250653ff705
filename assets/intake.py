"""What an upload must be to become an asset: a supported kind of media by its bytes, not empty,
within the configured size, pixel, frame and duration bounds. Each refusal says why."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import BinaryIO

from django.conf import settings

from assets.media_facts import MediaFacts, UnreadableHeader, media_facts
from assets.media_types import (
    FLAC,
    GIF,
    JPEG,
    MP3,
    MP4,
    OGG,
    PNG,
    QUICKTIME,
    SNIFF_BYTES,
    WAV,
    WEBM,
    WEBP,
    MediaType,
    sniff,
)
from assets.models import AssetKind

# What ComfyUI's loaders read (LoadImage: Pillow's formats; VHS_LoadVideo, LoadVideo: ffmpeg/PyAV's;
# LoadAudio: torchaudio/PyAV's), as far as the sniffer can tell them apart by their bytes.
ACCEPTED: dict[MediaType, str] = {
    PNG: AssetKind.IMAGE,
    JPEG: AssetKind.IMAGE,
    WEBP: AssetKind.IMAGE,
    GIF: AssetKind.IMAGE,
    MP4: AssetKind.VIDEO,
    QUICKTIME: AssetKind.VIDEO,
    WEBM: AssetKind.VIDEO,
    WAV: AssetKind.AUDIO,
    FLAC: AssetKind.AUDIO,
    MP3: AssetKind.AUDIO,
    OGG: AssetKind.AUDIO,
}
SUPPORTED = "PNG, JPEG, WebP or GIF images (masks are images); MP4, MOV or WebM videos; WAV, FLAC, MP3 or OGG audio"


class AssetRefused(ValueError):
    """The upload cannot be an asset; the message says why, for the one who sent it."""


@dataclass(frozen=True)
class Inspected:
    media: MediaType
    kind: str
    facts: MediaFacts
    sha256: str
    size: int


def asset_inspect(handle: BinaryIO, size: int) -> Inspected:
    """Judge an upload by its bytes; AssetRefused with the reason when it cannot be an asset."""
    if size == 0:
        raise AssetRefused("the file is empty")
    if size > settings.ASSET_MAX_BYTES:
        raise AssetRefused(f"the file is {size} bytes; the limit is {settings.ASSET_MAX_BYTES}")
    handle.seek(0)
    media = sniff(handle.read(SNIFF_BYTES))
    kind = ACCEPTED.get(media)
    if kind is None:
        what = "no known kind of media" if media.media_type == "application/octet-stream" else media.media_type
        raise AssetRefused(f"not a supported type: its content is {what} (whatever its name); supported: {SUPPORTED}")
    try:
        facts = media_facts(handle, media)
    except UnreadableHeader as exc:
        raise AssetRefused(f"its {media.media_type} header cannot be read ({exc})") from exc
    _check_bounds(kind, media, facts)
    return Inspected(media=media, kind=kind, facts=facts, sha256=_sha256(handle), size=size)


def _check_bounds(kind: str, media: MediaType, facts: MediaFacts) -> None:
    if kind in (AssetKind.IMAGE, AssetKind.VIDEO) and facts.pixels is None:
        raise AssetRefused(f"its {media.media_type} header does not say how many pixels it has")
    if facts.pixels is not None and facts.pixels > settings.ASSET_MAX_PIXELS:
        raise AssetRefused(
            f"{facts.width}x{facts.height} is {facts.pixels} pixels per frame; the limit is {settings.ASSET_MAX_PIXELS}"
        )
    if facts.frames is not None and facts.frames > settings.ASSET_MAX_FRAMES:
        raise AssetRefused(f"it has {facts.frames} frames; the limit is {settings.ASSET_MAX_FRAMES}")
    if facts.seconds is not None and facts.seconds > settings.ASSET_MAX_SECONDS:
        raise AssetRefused(f"it lasts {facts.seconds:.1f} seconds; the limit is {settings.ASSET_MAX_SECONDS:g}")


def _sha256(handle: BinaryIO) -> str:
    digest = hashlib.sha256()
    handle.seek(0)
    while chunk := handle.read(1 << 20):
        digest.update(chunk)
    handle.seek(0)
    return digest.hexdigest()
