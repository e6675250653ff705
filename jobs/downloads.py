"""Outputs and previews as HTTP responses that can never run on the project's origin.

A file ComfyUI made is untrusted content: an x.html or x.svg output opened from the admin ran its
script with the staff user's session (docs/HAZARDS.md). So outputs are served by the same rules as
users' input assets (assets.serving): the type sent is what the file's bytes are, only inert media
are shown inline, anything else downloads as `application/octet-stream`, and every response forbids
sniffing and sandboxes whatever a browser might still make of it.
"""

from __future__ import annotations

from django.core.files.storage import default_storage
from django.http import Http404, HttpRequest
from django.http.response import HttpResponseBase

from assets.serving import storage_file_response, stored_file_response
from jobs import services
from jobs.models import Job, JobOutput


def output_response(request: HttpRequest, output: JobOutput) -> HttpResponseBase:
    return stored_file_response(
        request, output.file, name=output.comfy_filename, default_stem="output", what="output file"
    )


def thumbnail_response(request: HttpRequest, output: JobOutput) -> HttpResponseBase:
    """The output's stored thumbnail (jobs.thumbnails), served by the same rules as the output."""
    if not output.thumbnail:
        raise Http404("this output has no thumbnail")
    return stored_file_response(
        request, output.thumbnail, name=f"thumbnail_{output.comfy_filename}", default_stem="thumbnail", what="thumbnail"
    )


def preview_response(request: HttpRequest, job: Job) -> HttpResponseBase:
    """The latest live preview: stored only when its bytes are a raster image (services.job_preview_store)."""
    path = services.job_preview_path(job)
    if path is None:
        raise Http404("no preview for this job")
    response = storage_file_response(
        request, default_storage, path, download_stem="preview", what="preview for this job", raster_only=True
    )
    response["Cache-Control"] = "no-store"
    return response
