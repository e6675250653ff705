"""ComfyUI's image loaders (LoadImage, LoadImageMask), reading real files from the input folder.

As in ComfyUI 0.8: the file is named relative to the input folder ("sub/dir/x.png" for a file
uploaded into a subfolder, "x.png [output]" for another folder), `/object_info` offers the files at
the top of the input folder, and VALIDATE_INPUTS refuses a name that is not there with
"Invalid image file: <name>" (so the input's list is not checked: a file in a subfolder is fine).

The image is really decoded (Pillow): the IMAGE that flows on has the file's size and, per frame,
its average colour, so a SaveImage after a LoadImage writes an image of the loaded one's size and
colour. Every read is kept (GET /sim/input_reads), for tests to see which file reached which node.
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image, ImageOps, ImageSequence

from .nodes import Node, NodeContext, NodeReturn
from .options import SimulatorOptions
from .output_files import annotated_filepath, directory_for_type
from .tensors import ImageBatch, Mask, Rgb

# ComfyUI's LoadImage hands back a 64x64 zero mask for an image without alpha.
EMPTY_MASK = Mask(64, 64, (0.0,))


def annotated_path(options: SimulatorOptions, name: str) -> Path:
    """folder_paths.get_annotated_filepath: relative to the input folder unless annotated."""
    filename, file_type = annotated_filepath(name)
    base = directory_for_type(options, file_type or "input") or options.input_dir
    return Path(os.path.join(base, filename))


def top_level_files(folder: Path, content_type: str | None = None) -> list[str]:
    if not folder.is_dir():
        return []
    names = [entry.name for entry in folder.iterdir() if entry.is_file()]
    if content_type is not None:
        names = [n for n in names if (mimetypes.guess_type(n)[0] or "").startswith(f"{content_type}/")]
    return sorted(names)


@dataclass(frozen=True)
class LoadedImage:
    images: ImageBatch
    mask: Mask
    sha256: str


def load_image_file(path: Path) -> LoadedImage:
    """What ComfyUI's LoadImage makes of a file: every frame of the first frame's size, RGB, and a
    mask from the alpha channel (1 where transparent)."""
    data = path.read_bytes()
    colours: list[Rgb] = []
    masks: list[float] = []
    size: tuple[int, int] | None = None
    with Image.open(path) as opened:
        for raw_frame in ImageSequence.Iterator(opened):
            frame = _upright(raw_frame)
            if size is None:
                size = frame.size
            elif frame.size != size:
                continue  # ComfyUI skips frames of another size
            colours.append(_average(frame.convert("RGB")))
            has_alpha = "A" in frame.getbands() or (frame.mode == "P" and "transparency" in frame.info)
            if has_alpha:
                masks.append(1.0 - _average(frame.convert("RGBA").getchannel("A")) / 255.0)
    assert size is not None
    mask = Mask(size[0], size[1], tuple(masks)) if len(masks) == len(colours) else EMPTY_MASK
    return LoadedImage(ImageBatch(size[0], size[1], tuple(colours)), mask, hashlib.sha256(data).hexdigest())


def _upright(frame: Image.Image) -> Image.Image:
    frame = ImageOps.exif_transpose(frame) or frame
    return frame.point(lambda value: value * (1 / 255)) if frame.mode == "I" else frame


def _average(image: Image.Image) -> Any:
    return image.resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))


def _invalid_unless_exists(options: SimulatorOptions, name: Any, what: str) -> bool | str:
    if not isinstance(name, str) or not os.path.exists(annotated_path(options, name)):
        return f"Invalid {what} file: {name}"
    return True


class LoadImage(Node):
    RETURN_TYPES = ("IMAGE", "MASK")
    CATEGORY = "image"
    DISPLAY_NAME = "Load Image"
    VALIDATED_INPUTS: ClassVar[tuple[str, ...]] = ("image",)

    @classmethod
    def input_types(cls, options: SimulatorOptions) -> dict[str, dict[str, Any]]:
        return {"required": {"image": (top_level_files(options.input_dir, "image"), {"image_upload": True})}}

    @classmethod
    def validate_inputs(cls, options: SimulatorOptions, image: Any = None, **_: Any) -> bool | str:
        return _invalid_unless_exists(options, image, "image")

    async def execute(self, ctx: NodeContext, image: str, **_: Any) -> NodeReturn:
        loaded = await asyncio.to_thread(load_image_file, annotated_path(ctx.options, image))
        _record(ctx, self, image, loaded)
        return loaded.images, loaded.mask


class LoadImageMask(Node):
    RETURN_TYPES = ("MASK",)
    CATEGORY = "mask"
    DISPLAY_NAME = "Load Image (as Mask)"
    VALIDATED_INPUTS: ClassVar[tuple[str, ...]] = ("image",)
    CHANNELS: ClassVar[list[str]] = ["alpha", "red", "green", "blue"]

    @classmethod
    def input_types(cls, options: SimulatorOptions) -> dict[str, dict[str, Any]]:
        return {
            "required": {
                "image": (top_level_files(options.input_dir), {"image_upload": True}),
                "channel": (cls.CHANNELS,),
            }
        }

    @classmethod
    def validate_inputs(cls, options: SimulatorOptions, image: Any = None, **_: Any) -> bool | str:
        return _invalid_unless_exists(options, image, "image")

    async def execute(self, ctx: NodeContext, image: str, channel: str, **_: Any) -> NodeReturn:
        path = annotated_path(ctx.options, image)
        loaded = await asyncio.to_thread(load_image_file, path)
        mask = await asyncio.to_thread(_channel_mask, path, channel)
        _record(ctx, self, image, loaded)
        return (mask,)


def _channel_mask(path: Path, channel: str) -> Mask:
    with Image.open(path) as opened:
        frame = _upright(opened)
        if frame.getbands() != ("R", "G", "B", "A"):
            frame = frame.convert("RGBA")
        band = channel[0].upper()
        if band not in frame.getbands():
            return EMPTY_MASK
        value = _average(frame.getchannel(band)) / 255.0
        return Mask(frame.width, frame.height, (1.0 - value if band == "A" else value,))


def _record(ctx: NodeContext, node: Node, name: str, loaded: LoadedImage) -> None:
    ctx.input_read(
        {
            "node_type": type(node).__name__,
            "image": name,
            "sha256": loaded.sha256,
            "width": loaded.images.width,
            "height": loaded.images.height,
            "frames": loaded.images.batch_size,
            "colours": [list(colour) for colour in loaded.images.frames],
        }
    )


class MaskToImage(Node):
    """ComfyUI's "Convert Mask to Image": each mask frame as a grey image."""

    RETURN_TYPES = ("IMAGE",)
    CATEGORY = "mask"
    DISPLAY_NAME = "Convert Mask to Image"
    PYTHON_MODULE = "comfy_extras.nodes_mask"

    @classmethod
    def input_types(cls, options: SimulatorOptions) -> dict[str, dict[str, Any]]:
        return {"required": {"mask": ("MASK",)}}

    async def execute(self, ctx: NodeContext, mask: Mask, **_: Any) -> NodeReturn:
        greys = tuple((round(v * 255),) * 3 for v in mask.values)
        return (ImageBatch(mask.width, mask.height, greys),)
