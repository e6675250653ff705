"""`POST /upload/image` and `POST /upload/mask`, as ComfyUI 0.8's server.py handles them.

The form: `image` (a file part; its filename is the name asked for), `type` (input by default,
output or temp), `subfolder`, `overwrite`. A path leaving the folder is a 400. Without
`overwrite` ("true" or "1"), an existing file of the same name and bytes is kept and its name
answered; one with other bytes makes the new file "name (1).png", "name (2).png", ... The answer
is `{"name", "subfolder", "type"}`. `/upload/mask` takes `original_ref` (JSON naming an image) and
stores that image with the uploaded mask's alpha channel, under the upload's name.

Every upload is kept (GET /sim/uploads): what was asked, what was answered, whether it was a duplicate.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from .options import SimulatorOptions
from .output_files import annotated_filepath, directory_for_type

Form = MultiDictProxy[str | bytes | bytearray | web.FileField]
SaveFunction = Callable[[web.FileField, Form, str], None]


def image_upload(
    options: SimulatorOptions, post: Form, uploads: list[dict[str, Any]], save: SaveFunction | None = None
) -> web.Response:
    image = post.get("image")
    overwrite = post.get("overwrite")
    requested_type = post.get("type")
    upload_type = requested_type if isinstance(requested_type, str) else "input"
    folder = directory_for_type(options, upload_type)
    if folder is None:
        # ComfyUI's get_dir_by_type leaves its directory unset for an unknown type, and raises.
        return web.Response(status=500)
    upload_dir = str(folder)
    if not isinstance(image, web.FileField) or not image.file:
        return web.Response(status=400)
    filename = image.filename
    if not filename:
        return web.Response(status=400)
    subfolder = post.get("subfolder", "")
    subfolder = subfolder if isinstance(subfolder, str) else ""
    full_output_folder = os.path.join(upload_dir, os.path.normpath(subfolder))
    filepath = os.path.abspath(os.path.join(full_output_folder, filename))
    if os.path.commonpath((upload_dir, filepath)) != upload_dir:
        return web.Response(status=400)
    os.makedirs(full_output_folder, exist_ok=True)

    stem, extension = os.path.splitext(filename)
    duplicate = False
    if overwrite not in ("true", "1"):
        counter = 1
        while os.path.exists(filepath):
            if _same_bytes(filepath, image):  # ComfyUI's fix for #3465: no copies of the same file
                duplicate = True
                break
            filename = f"{stem} ({counter}){extension}"
            filepath = os.path.join(full_output_folder, filename)
            counter += 1
    if not duplicate:
        if save is not None:
            save(image, post, filepath)
        else:
            with open(filepath, "wb") as handle:
                handle.write(image.file.read())
    uploads.append(_record(image, subfolder, upload_type, overwrite, filename, duplicate, filepath))
    return web.json_response({"name": filename, "subfolder": subfolder, "type": upload_type})


def mask_saver(options: SimulatorOptions) -> SaveFunction:
    """`/upload/mask`'s save: the original image (named by `original_ref`) with the mask's alpha."""

    def save(image: web.FileField, post: Form, filepath: str) -> None:
        original_ref = json.loads(str(post.get("original_ref")))
        filename, annotated_type = annotated_filepath(original_ref["filename"])
        # As in ComfyUI, refusing here only skips the write: the upload still answers its name.
        if not filename or filename[0] == "/" or ".." in filename:
            return
        folder = directory_for_type(options, annotated_type or original_ref.get("type", "output"))
        if folder is None:
            return
        output_dir = str(folder)
        if original_ref.get("subfolder", "") != "":
            full_output_dir = os.path.join(output_dir, original_ref["subfolder"])
            if os.path.commonpath((os.path.abspath(full_output_dir), output_dir)) != output_dir:
                return
            output_dir = full_output_dir
        file = os.path.join(output_dir, filename)
        if os.path.isfile(file):
            with Image.open(file) as original:
                metadata = PngInfo()
                for key, value in getattr(original, "text", {}).items():
                    metadata.add_text(key, value)
                combined = original.convert("RGBA")
                mask = Image.open(image.file).convert("RGBA")
                combined.putalpha(mask.getchannel("A"))
                combined.save(filepath, compress_level=4, pnginfo=metadata)

    return save


def _same_bytes(filepath: str, image: web.FileField) -> bool:
    with open(filepath, "rb") as handle:
        existing = hashlib.sha256(handle.read()).hexdigest()
    uploaded = hashlib.sha256(image.file.read()).hexdigest()
    image.file.seek(0)
    return existing == uploaded


def _record(
    image: web.FileField,
    subfolder: str,
    upload_type: str,
    overwrite: Any,
    name: str,
    duplicate: bool,
    filepath: str,
) -> dict[str, Any]:
    image.file.seek(0)
    data = image.file.read()
    image.file.seek(0)
    return {
        "filename": image.filename,
        "subfolder": subfolder,
        "type": upload_type,
        "overwrite": overwrite if isinstance(overwrite, str) else None,
        "name": name,
        "duplicate": duplicate,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "stored_sha256": _file_sha256(filepath),
        "received_at": int(time.time() * 1000),
    }


def _file_sha256(filepath: str) -> str | None:
    if not os.path.isfile(filepath):
        return None
    with open(filepath, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()
