"""GET /view and POST /upload/image: files by the names ComfyUI's clients use.

An output is named as /history named it (comfy_api.outputs: the stored file's name in the job's id as
subfolder) and served from the project's storage, never fetched from a GPU; an input is a name the
caller uploaded, served from their asset. Both are served inert (assets.serving), to whoever may see
the job (REST's rules: its owner, staff with the permission to view jobs) or owns the upload.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import IO, Any, cast

from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile, UploadedFile
from django.db.models.fields.files import FieldFile
from django.http import Http404, JsonResponse
from django.http.response import HttpResponseBase
from rest_framework.request import Request

from assets import serving
from assets.intake import AssetRefused
from assets.uploads import declared_too_large, limit_uploads
from comfy_api import services
from comfy_api.endpoint import FrontDoorView
from comfy_api.errors import not_supported, refused
from comfy_api.input_names import split_name
from comfy_api.masks import MaskRefused, mask_applied
from comfy_api.models import FrontDoorInput
from comfy_api.outputs import OUTPUT_TYPES
from jobs.models import JobOutput
from jobs.selectors import visible_jobs

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# ComfyUI's /view options that change the bytes it sends: the front door sends the stored file as it is.
CONVERTING_OPTIONS = ("channel",)


class ViewFileView(FrontDoorView):
    def get(self, request: Request) -> HttpResponseBase:
        query = request.query_params
        filename = query.get("filename", "")
        subfolder = query.get("subfolder", "")
        kind = query.get("type", "output") or "output"
        if not filename:
            return refused("filename is required")
        if "/" in filename or "\\" in filename or filename in (".", ".."):
            return refused("filename must be a file name, not a path")
        if _CONTROL.search(filename) or _CONTROL.search(subfolder):
            # No stored name holds one; a NUL would reach the lookup (PostgreSQL refuses it: a 500).
            return refused("filename and subfolder must not hold control characters")
        for option in CONVERTING_OPTIONS:
            if query.get(option, "rgba") != "rgba":
                return not_supported(f"/view with {option}={query.get(option)!r}", why="only the whole image is sent")
        if kind == "input":
            return _input_file(request, subfolder, filename)
        if kind in OUTPUT_TYPES:
            return _output_file(request, subfolder, filename)
        return refused(f"type must be one of input, output, temp, not {kind[:32]!r}")


def served_file(request: Request, stored: FieldFile, **how: str) -> HttpResponseBase:
    """assets.serving's inert response (streamed with byte ranges, or a signed redirect on S3)."""
    return serving.stored_file_response(request._request, stored, **how)


def stored_output(user: Any, subfolder: str, filename: str) -> JobOutput | None:
    """The output /history named so, of a job `user` may see; None otherwise."""
    try:
        job_id = uuid.UUID(subfolder)
    except ValueError:
        return None
    return (
        JobOutput.objects.filter(job_id=job_id, job__in=visible_jobs(user), file__endswith=f"/{filename}")
        .only("file", "comfy_filename")
        .first()
    )


def uploaded_input(user: Any, subfolder: str, filename: str) -> FrontDoorInput | None:
    """The caller's upload of that name (ComfyUI's "sub/x.png [input]" forms too); None otherwise."""
    folder, name = split_name(f"{subfolder}/{filename}" if subfolder else filename)
    return FrontDoorInput.objects.filter(user=user, subfolder=folder, name=name).select_related("asset").first()


def _output_file(request: Request, subfolder: str, filename: str) -> HttpResponseBase:
    output = stored_output(request.user, subfolder, filename)
    if output is None:
        raise Http404("no such output of a job of yours (its subfolder is the id of the job that made it)")
    return served_file(request, output.file, name=output.comfy_filename, default_stem="output", what="output")


def _input_file(request: Request, subfolder: str, filename: str) -> HttpResponseBase:
    row = uploaded_input(request.user, subfolder, filename)
    if row is None:
        raise Http404("no such input of yours: upload it with POST /upload/image")
    return served_file(request, row.asset.file, name=row.name, default_stem="input", what="input")


def _received(request: Request) -> tuple[UploadedFile, Any] | JsonResponse:
    """The multipart upload's `image` and its form, within ASSET_MAX_BYTES; or the refusal."""
    limit = settings.ASSET_MAX_BYTES
    if declared_too_large(request._request, limit):
        return refused(f"the upload is larger than the limit of {limit} bytes", status=413)
    size_limit = limit_uploads(request._request, limit)
    upload = request.FILES.get("image")
    if size_limit.exceeded:
        return refused(f"the file is larger than the limit of {limit} bytes", status=413)
    if upload is None:
        return refused("the upload has no 'image' file")
    form: Any = request.data
    kind = form.get("type") or "input"
    if kind != "input":
        return refused(f"uploads go to the input folder only (type 'input'), not {str(kind)[:32]!r}")
    return upload, form


def _stored_as_input(request: Request, upload: UploadedFile, form: Any) -> JsonResponse:
    try:
        row = services.front_door_input_store(
            user=request.user,
            upload=upload,
            subfolder=str(form.get("subfolder") or ""),
            overwrite=str(form.get("overwrite", "")).lower() in ("true", "1"),
        )
    except (services.UploadRefused, AssetRefused) as exc:
        return refused(str(exc))
    return JsonResponse({"name": row.name, "subfolder": row.subfolder, "type": "input"})


class UploadImageView(FrontDoorView):
    throttle_scope = "upload"

    def post(self, request: Request) -> JsonResponse:
        received = _received(request)
        if isinstance(received, JsonResponse):
            return received
        return _stored_as_input(request, *received)


class UploadMaskView(FrontDoorView):
    """The original image (`original_ref`: an upload of the caller's, or an output of a job they may
    see) with the uploaded mask's alpha, kept as an upload under the mask's name (comfy_api.masks)."""

    throttle_scope = "upload"

    def post(self, request: Request) -> JsonResponse:
        received = _received(request)
        if isinstance(received, JsonResponse):
            return received
        mask, form = received
        original = _original_of(request, form.get("original_ref"))
        if isinstance(original, JsonResponse):
            return original
        try:
            with original.open("rb") as handle:
                combined = mask_applied(
                    cast(IO[Any], handle), cast(IO[Any], mask), max_pixels=settings.ASSET_MAX_PIXELS
                )
        except FileNotFoundError:
            return refused("the original image is no longer in storage", status=404, kind="not_found")
        except MaskRefused as exc:
            return refused(str(exc))
        masked = SimpleUploadedFile(mask.name or "mask.png", combined, content_type="image/png")
        return _stored_as_input(request, masked, form)


def _original_of(request: Request, raw: Any) -> FieldFile | JsonResponse:
    try:
        ref = json.loads(str(raw or ""))
    except ValueError:
        ref = None
    if not isinstance(ref, dict) or not isinstance(ref.get("filename"), str) or not ref["filename"]:
        return refused("original_ref must be JSON naming the image: {filename, subfolder, type}")
    subfolder = str(ref.get("subfolder") or "")
    filename = ref["filename"]
    kind = ref.get("type") or "output"
    if not isinstance(kind, str):
        return refused("original_ref's type must be one of input, output, temp")
    if filename.endswith(" [input]"):
        kind = "input"
    if kind == "input":
        row = uploaded_input(request.user, subfolder, filename)
        if row is not None:
            return row.asset.file
    elif kind in OUTPUT_TYPES:
        output = stored_output(request.user, subfolder, filename)
        if output is not None:
            return output.file
    return refused("no such original image of yours (original_ref)", status=404, kind="not_found")
