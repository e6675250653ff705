"""Outputs and previews as HTTP responses that can never run on the project's origin.

A file ComfyUI made is untrusted content: an x.html or x.svg output opened from the admin ran its
script with the staff user's session (docs/HAZARDS.md). So the type sent is what the file's bytes
are (sniffed again here, so outputs stored before types were sniffed are judged the same way), only
inert media are shown inline, anything else downloads as `application/octet-stream`, and every
response forbids sniffing and sandboxes whatever a browser might still make of it.
"""

from __future__ import annotations

from django.core.files.storage import default_storage
from django.http import FileResponse, Http404

from jobs import services
from jobs.media_types import SNIFF_BYTES, UNKNOWN, sniff
from jobs.models import Job, JobOutput
from jobs.output_files import download_name

# A document in a sandbox without allow-scripts cannot run script, and is its own opaque origin: no
# cookies, no storage, no same-origin requests, whatever it was.
UNTRUSTED_CONTENT_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox; default-src 'none'",
}


def output_response(output: JobOutput) -> FileResponse:
    try:
        handle = output.file.open("rb")
    except FileNotFoundError as exc:
        raise Http404("the output file is no longer in storage") from exc
    head = handle.read(SNIFF_BYTES)
    handle.seek(0)
    media = sniff(head)
    if not media.inline:
        media = UNKNOWN
    response = FileResponse(
        handle,
        content_type=media.media_type,
        as_attachment=not media.inline,
        filename=download_name(output.comfy_filename, media),
    )
    return _untrusted(response)


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
    return _untrusted(response)


def _untrusted(response: FileResponse) -> FileResponse:
    for header, value in UNTRUSTED_CONTENT_HEADERS.items():
        response[header] = value
    return response
