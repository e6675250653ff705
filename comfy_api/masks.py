"""POST /upload/mask as ComfyUI does it: the original image (named by `original_ref`) with the
uploaded mask's alpha channel as its own, saved as a PNG under the mask upload's name.

Both images are untrusted (a user's upload, a GPU machine's output), and decoding is where that
bites (jobs/thumbnails.py): each is opened only as the raster format its first bytes show, and its
header's pixel count is checked against ASSET_MAX_PIXELS before a pixel is decoded.
"""

from __future__ import annotations

import io
from typing import IO, Any

from PIL import Image

from assets.media_types import GIF, JPEG, PNG, SNIFF_BYTES, WEBP, sniff

PILLOW_FORMATS = {PNG.media_type: "PNG", JPEG.media_type: "JPEG", GIF.media_type: "GIF", WEBP.media_type: "WEBP"}


class MaskRefused(ValueError):
    """The images cannot be combined; the message says why."""


def _opened(handle: IO[Any], what: str, max_pixels: int) -> Image.Image:
    head = handle.read(SNIFF_BYTES)
    handle.seek(0)
    pillow_format = PILLOW_FORMATS.get(sniff(head).media_type)
    if pillow_format is None:
        raise MaskRefused(f"the {what} is not a PNG, JPEG, GIF or WebP image")
    try:
        image = Image.open(handle, formats=[pillow_format])
    except Exception as exc:  # whatever a decoder raises on bytes it cannot read
        raise MaskRefused(f"the {what} cannot be read as an image") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise MaskRefused(f"the {what} is {width}x{height}, more than ASSET_MAX_PIXELS ({max_pixels})")
    return image


def mask_applied(original: IO[Any], mask: IO[Any], *, max_pixels: int) -> bytes:
    """The original as RGBA with the mask's alpha, as PNG bytes. MaskRefused when either is not an
    image it may decode, or their sizes differ."""
    with _opened(original, "original image", max_pixels) as base, _opened(mask, "mask", max_pixels) as painted:
        if base.size != painted.size:
            raise MaskRefused(
                f"the mask is {painted.size[0]}x{painted.size[1]}, the image {base.size[0]}x{base.size[1]}"
            )
        try:
            combined = base.convert("RGBA")
            combined.putalpha(painted.convert("RGBA").getchannel("A"))
        except Exception as exc:  # a truncated or crafted file fails only when its pixels are decoded
            raise MaskRefused("the image or the mask cannot be decoded") from exc
    out = io.BytesIO()
    combined.save(out, format="PNG", compress_level=4)
    return out.getvalue()
