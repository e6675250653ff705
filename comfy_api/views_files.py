"""GET /view and POST /upload/image: files by the names ComfyUI's clients use.

An output is named as /history named it (comfy_api.outputs: the stored file's name in the job's id as
subfolder) and served from the project's storage, never fetched from a GPU; an input is a name the
caller uploaded, served from their asset. Both are served inert (assets.serving), to whoever may see
the job (REST's rules: its owner, staff with the permission to view jobs) or owns the upload.
"""

from __future__ import annotations

import inspect
import uuid
from typing import Any

from django.conf import settings
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
from comfy_api.models import FrontDoorInput
from comfy_api.outputs import OUTPUT_TYPES
from jobs.models import JobOutput
from jobs.selectors import visible_jobs

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
        for option in CONVERTING_OPTIONS:
            if query.get(option, "rgba") != "rgba":
                return not_supported(f"/view with {option}={query.get(option)!r}", why="only the whole image is sent")
        if kind == "input":
            return _input_file(request, subfolder, filename)
        if kind in OUTPUT_TYPES:
            return _output_file(request, subfolder, filename)
        return refused(f"type must be one of input, output, temp, not {kind[:32]!r}")


def served_file(request: Request, stored: FieldFile, **how: str) -> HttpResponseBase:
    """assets.serving's inert response for a stored file. Its signature is changing (the storage
    work passes the request first, for byte ranges and signed redirects): both are called rightly
    until that lands, then this shim goes."""
    respond: Any = serving.stored_file_response
    if "request" in inspect.signature(respond).parameters:
        return respond(request._request, stored, **how)
    return respond(stored, **how)


def _output_file(request: Request, subfolder: str, filename: str) -> HttpResponseBase:
    try:
        job_id = uuid.UUID(subfolder)
    except ValueError:
        raise Http404("no such output: its subfolder is the id of the job that made it") from None
    output = (
        JobOutput.objects.filter(job_id=job_id, job__in=visible_jobs(request.user), file__endswith=f"/{filename}")
        .only("file", "comfy_filename")
        .first()
    )
    if output is None:
        raise Http404("no such output of a job of yours")
    return served_file(request, output.file, name=output.comfy_filename, default_stem="output", what="output")


def _input_file(request: Request, subfolder: str, filename: str) -> HttpResponseBase:
    folder, name = split_name(f"{subfolder}/{filename}" if subfolder else filename)
    owner: Any = request.user
    row = FrontDoorInput.objects.filter(user=owner, subfolder=folder, name=name).select_related("asset").first()
    if row is None:
        raise Http404("no such input of yours: upload it with POST /upload/image")
    return served_file(request, row.asset.file, name=row.name, default_stem="input", what="input")


class UploadImageView(FrontDoorView):
    throttle_scope = "upload"

    def post(self, request: Request) -> JsonResponse:
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
        overwrite = str(form.get("overwrite", "")).lower() in ("true", "1")
        try:
            row = services.front_door_input_store(
                user=request.user,
                upload=upload,
                subfolder=str(form.get("subfolder") or ""),
                overwrite=overwrite,
            )
        except (services.UploadRefused, AssetRefused) as exc:
            return refused(str(exc))
        return JsonResponse({"name": row.name, "subfolder": row.subfolder, "type": "input"})


class UploadMaskView(FrontDoorView):
    throttle_scope = "upload"

    def post(self, request: Request) -> JsonResponse:
        return not_supported(
            "POST /upload/mask",
            why="painting a mask into an uploaded image is not done here; upload the masked image "
            "(an RGBA PNG whose alpha is the mask) with POST /upload/image",
        )
