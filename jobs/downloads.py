"""Outputs and previews as HTTP responses that can never run on the project's origin.

A file ComfyUI made is untrusted content: an x.html or x.svg output opened from the admin ran its
script with the staff user's session (docs/HAZARDS.md). So outputs are served by the same rules as
users' input assets (assets.serving): the type sent is what the file's bytes are, only inert media
are shown inline, anything else downloads as `application/octet-stream`, and every response forbids
sniffing and sandboxes whatever a browser might still make of it.
"""

from __future__ import annotations

from django.core.files.storage import default_storage
from django.http import FileResponse, Http404

from assets.media_types import SNIFF_BYTES, sniff
from assets.serving import stored_file_response, untrusted
from jobs import services
from jobs.models import Job, JobOutput


def output_response(output: JobOutput) -> FileResponse:
    return stored_file_response(output.file, name=output.comfy_filename, default_stem="output", what="output file")


def thumbnail_response(output: JobOutput) -> FileResponse:
    """The output's stored thumbnail (jobs.thumbnails), served by the same rules as the output."""
    if not output.thumbnail:
        raise Http404("this output has no thumbnail")
    return stored_file_response(
        output.thumbnail, name=f"thumbnail_{output.comfy_filename}", default_stem="thumbnail", what="thumbnail"
    )


def preview_response(job: Job) -> FileResponse:
    """The latest live preview: stored only when its bytes are a raster image (services.job_preview_store)."""
    path = services.job_preview_path(job)
    if path is None:
        raise Http404("no preview for this job")
    handle = default_storage.open(path, "rb")
    media = sniff(handle.read(SNIFF_BYTES))
    handle.seek(0)
    if not media.raster_image:
        handle.close()
        raise Http404("no preview for this job")
    response = FileResponse(handle, content_type=media.media_type)
    response["Cache-Control"] = "no-store"
    return untrusted(response)
