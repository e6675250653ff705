"""Small stored thumbnails of raster-image outputs: what the admin's job list and the API's
`thumbnail_url` show instead of the full image scaled down by the browser.

An output is untrusted input from a GPU machine, and decoding an image is where that bites: a PNG
of a few hundred bytes can claim 100,000 x 100,000 pixels, an unknown chunk of gigabytes is read
whole into memory, a truncated or crafted file makes a decoder raise anything. So a thumbnail is
made only of a file whose first bytes show a raster image (PNG, JPEG, GIF, WebP: Pillow is never
left to guess another format, nor to run a plugin such as EPS), of at most JOB_THUMBNAIL_MAX_BYTES,
whose header claims at most JOB_THUMBNAIL_MAX_PIXELS, from its first frame; and any failure leaves
the output without a thumbnail: it is stored, and its job completes, all the same.

A thumbnail is a WebP of at most JOB_THUMBNAIL_SIZE pixels on its longest side, upright (its EXIF
orientation applied), kept through the storage API under a name the project makes
(jobs.models.thumbnail_upload_path). Outputs that are no raster image (video, audio) get none: the
admin names their kind instead; a job's live preview is a picture of the sampler's latent, not of
the output, so it does not stand in for one.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import BinaryIO

from django.conf import settings
from django.core.files.base import ContentFile, File
from PIL import Image, ImageOps

from assets.media_types import GIF, JPEG, PNG, SNIFF_BYTES, WEBP, sniff
from jobs.models import JobOutput

logger = logging.getLogger(__name__)

# Pillow's decoder for each raster type the sniffer knows: the only one it may use for that file.
PILLOW_FORMATS = {PNG.media_type: "PNG", JPEG.media_type: "JPEG", GIF.media_type: "GIF", WEBP.media_type: "WEBP"}
WEBP_QUALITY = 80


class ThumbnailRefused(Exception):
    """The file is not one a thumbnail is made of (its type, its size, its claimed pixels)."""


@dataclass(frozen=True)
class Thumbnail:
    webp: bytes
    width: int
    height: int


def thumbnail_of(handle: BinaryIO | File, *, size: int, max_pixels: int) -> Thumbnail:
    """A WebP of the image in `handle` at most `size` pixels on its longest side.

    ThumbnailRefused when its bytes are no raster image or it claims more than `max_pixels`; any
    other exception when Pillow cannot decode it (the caller keeps the output without one)."""
    head = handle.read(SNIFF_BYTES)
    handle.seek(0)
    pillow_format = PILLOW_FORMATS.get(sniff(head).media_type)
    if pillow_format is None:
        raise ThumbnailRefused(f"not a raster image ({sniff(head).media_type})")
    with Image.open(handle, formats=[pillow_format]) as image:
        # Image.open reads the header only: the pixels it claims are known before any is decoded.
        width, height = image.size
        if width * height > max_pixels:
            raise ThumbnailRefused(f"{width}x{height} is more than JOB_THUMBNAIL_MAX_PIXELS ({max_pixels})")
        image.draft("RGB", (size, size))  # a JPEG decodes at 1/2 to 1/8 of its size when that is enough
        upright = ImageOps.exif_transpose(image)  # decodes the first frame only
    small = upright.convert("RGBA" if upright.has_transparency_data else "RGB")
    small.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    small.save(out, format="WEBP", quality=WEBP_QUALITY)
    return Thumbnail(out.getvalue(), small.width, small.height)


def output_thumbnail_store(output: JobOutput) -> bool:
    """Make and keep the thumbnail of a stored output that has none; True when it has one now.

    Never raises: a thumbnail that cannot be made is absent, and says why in the log only. Two
    makers at once (the tracker and `make_thumbnails`) keep one: the second one's file is removed."""
    if output.thumbnail:
        return True
    if not output.media_type.startswith("image/") or output.size_bytes > settings.JOB_THUMBNAIL_MAX_BYTES:
        return False
    try:
        with output.file.open("rb") as handle:
            made = thumbnail_of(handle, size=settings.JOB_THUMBNAIL_SIZE, max_pixels=settings.JOB_THUMBNAIL_MAX_PIXELS)
    except ThumbnailRefused as exc:
        logger.info("output %s of job %s: no thumbnail: %s", output.pk, output.job_id, exc)
        return False
    except Exception as exc:  # whatever a decoder raises on a file from a GPU machine
        logger.warning("output %s of job %s: no thumbnail: %s: %s", output.pk, output.job_id, type(exc).__name__, exc)
        return False
    stored = output.thumbnail
    try:
        stored.save("thumbnail.webp", ContentFile(made.webp), save=False)
    except Exception as exc:  # the file store went down since the output was stored
        logger.warning(
            "output %s of job %s: thumbnail not stored: %s: %s", output.pk, output.job_id, type(exc).__name__, exc
        )
        return False
    kept = JobOutput.objects.filter(pk=output.pk, thumbnail="").update(
        thumbnail=stored.name, thumbnail_width=made.width, thumbnail_height=made.height
    )
    if not kept:
        stored.delete(save=False)
        output.refresh_from_db(fields=["thumbnail", "thumbnail_width", "thumbnail_height"])
        return bool(output.thumbnail)
    output.thumbnail_width, output.thumbnail_height = made.width, made.height
    return True
