"""ComfyUI's core nodes as the simulator runs them, declared as ComfyUI declares them.

Input declarations, return types, categories and display names follow ComfyUI 0.8, because
clients read them from `/object_info` and validation errors quote them back (`input_config`).
The work itself is fake: cost comes from sampler steps, images are solid colours, but the files
written are real PNG/WEBP.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
from pathlib import Path
from typing import Any, ClassVar, Protocol

from PIL import Image, ImageOps
from PIL.PngImagePlugin import PngInfo

from .device import DeviceMemory
from .options import SimulatorOptions
from .output_files import get_save_image_path
from .progress import Preview, ProgressBar
from .tensors import Conditioning, ImageBatch, Latent, ModelHandle, blend, colour_from_int

MAX_RESOLUTION = 16384
MAX_PREVIEW_RESOLUTION = 512
ANY = "*"

SAMPLERS = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
    "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis", "res_multistep",
    "res_multistep_cfg_pp", "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp", "gradient_estimation",
    "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
]  # fmt: skip
SCHEDULERS = [
    "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal", "linear_quadratic",
    "kl_optimal",
]  # fmt: skip

NodeReturn = tuple[Any, ...] | dict[str, Any]


class OutOfMemoryError(RuntimeError):
    """Stands in for torch.OutOfMemoryError; ComfyUI reports the type by its module-qualified name."""


OutOfMemoryError.__module__ = "torch"


class NodeContext(Protocol):
    """What a running node may use from the executor."""

    unique_id: str
    options: SimulatorOptions
    device: DeviceMemory

    def progress_bar(self, total: float) -> ProgressBar: ...

    def input_read(self, entry: dict[str, Any]) -> None:
        """Keep what a loader read from the input folder (GET /sim/input_reads)."""


class Node:
    """Base of all simulated nodes; class attributes mirror ComfyUI's node API."""

    RETURN_TYPES: ClassVar[tuple[str, ...]] = ()
    RETURN_NAMES: ClassVar[tuple[str, ...] | None] = None
    OUTPUT_TOOLTIPS: ClassVar[tuple[str, ...] | None] = None
    OUTPUT_NODE: ClassVar[bool] = False
    # ComfyUI runs coroutine nodes as tasks alongside other work; sync nodes block the executor.
    IS_ASYNC: ClassVar[bool] = False
    NOT_IDEMPOTENT: ClassVar[bool] = False
    CATEGORY: ClassVar[str] = "sd"
    DESCRIPTION: ClassVar[str] = ""
    DISPLAY_NAME: ClassVar[str | None] = None
    PYTHON_MODULE: ClassVar[str] = "nodes"
    # The inputs ComfyUI passes to the class's VALIDATE_INPUTS (its argument names): validation
    # skips their min/max and list checks and asks validate_inputs instead.
    VALIDATED_INPUTS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def input_types(cls, options: SimulatorOptions) -> dict[str, dict[str, Any]]:
        raise NotImplementedError

    @classmethod
    def validate_inputs(cls, options: SimulatorOptions, **inputs: Any) -> bool | str:
        """ComfyUI's VALIDATE_INPUTS: True, or why not (only for classes with VALIDATED_INPUTS)."""
        return True

    # Called with the node's inputs as keywords; each node declares the ones it uses, as ComfyUI's
    # FUNCTION methods do (`*args` lets mypy accept the narrower signatures of the subclasses).
    async def execute(self, ctx: NodeContext, *args: Any, **inputs: Any) -> NodeReturn:
        raise NotImplementedError


def encode_preview(image: Image.Image, image_format: str = "JPEG") -> Preview:
    image = ImageOps.contain(image, (MAX_PREVIEW_RESOLUTION, MAX_PREVIEW_RESOLUTION), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, quality=95, compress_level=1)
    return Preview(image_format, buffer.getvalue())


# --- core image and sampling nodes -------------------------------------------------------------


class EmptyImage(Node):
    RETURN_TYPES = ("IMAGE",)
    CATEGORY = "image"

    @classmethod
    def input_types(cls, options: SimulatorOptions) -> dict[str, dict[str, Any]]:
        return {
            "required": {
                "width": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
                "height": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
                "color": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "color"}),
            }
        }

    async def execute(
        self, ctx: NodeContext, width: int, height: int, batch_size: int = 1, color: int = 0, **_: Any
    ) -> NodeReturn:
        return (ImageBatch(width, height, (colour_from_int(color),) * batch_size),)


class CheckpointLoaderSimple(Node):
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    OUTPUT_TOOLTIPS = (
        "The model used for denoising latents.",
        "The CLIP model used for encoding text prompts.",
        "The VAE model used for encoding and decoding images to and from latent space.",
    )
    CATEGORY = "loaders"
    DESCRIPTION = "Loads a diffusion model checkpoint, diffusion models are used to denoise latents."
    DISPLAY_NAME = "Load Checkpoint"

    @classmethod
    def input_types(cls, options: SimulatorOptions) -> dict[str, dict[str, Any]]:
        return {
            "required": {
                "ckpt_name": (list(options.models), {"tooltip": "The name of the checkpoint (model) to load."}),
            }
        }

    async def execute(self, ctx: NodeContext, ckpt_name: str, **_: Any) -> NodeReturn:
        ctx.device.load_checkpoint(ckpt_name)
        return ModelHandle("MODEL", ckpt_name), ModelHandle("CLIP", ckpt_name), ModelHandle("VAE", ckpt_name)


class CLIPTextEncode(Node):
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("A conditioning containing the embedded text used to guide the diffusion model.",)
    CATEGORY = "conditioning"
    DESCRIPTION = (
        "Encodes a text prompt using a CLIP model into an embedding that can be used to guide the diffusion model "
        "towards generating specific images."
    )
    DISPLAY_NAME = "CLIP Text Encode (Prompt)"

    @classmethod
    def input_types(cls, options: SimulatorOptions) -> dict[str, dict[str, Any]]:
        return {
            "required": {
                "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": "The text to be encoded."}),
                "clip": ("CLIP", {"tooltip": "The CLIP model used for encoding the text."}),
            }
        }

    async def execute(self, ctx: NodeContext, text: str, clip: ModelHandle, **_: Any) -> NodeReturn:
        return (Conditioning(text),)


class EmptyLatentImage(Node):
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The empty latent image batch.",)
    CATEGORY = "latent"
    DESCRIPTION = "Create a new batch of empty latent images to be denoised via sampling."
    DISPLAY_NAME = "Empty Latent Image"

    @classmethod
    def input_types(cls, options: SimulatorOptions) -> dict[str, dict[str, Any]]:
        return {
            "required": {
                "width": ("INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8, "tooltip": "The width of the latent images in pixels."}),
                "height": ("INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8, "tooltip": "The height of the latent images in pixels."}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096, "tooltip": "The number of latent images in the batch."}),
            }
        }  # fmt: skip

    async def execute(self, ctx: NodeContext, width: int, height: int, batch_size: int = 1, **_: Any) -> NodeReturn:
        return (Latent(width, height, batch_size),)


class KSampler(Node):
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The denoised latent.",)
    CATEGORY = "sampling"
    DESCRIPTION = "Uses the provided model, positive and negative conditioning to denoise the latent image."
    DISPLAY_NAME = "KSampler"

    @classmethod
    def input_types(cls, options: SimulatorOptions) -> dict[str, dict[str, Any]]:
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The model used for denoising the input latent."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True, "tooltip": "The random seed used for creating the noise."}),
                "steps": ("INT", {"default": 20, "min": 1, "max": 10000, "tooltip": "The number of steps used in the denoising process."}),
                "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01, "tooltip": "The Classifier-Free Guidance scale balances creativity and adherence to the prompt. Higher values result in images more closely matching the prompt however too high values will negatively impact quality."}),
                "sampler_name": (SAMPLERS, {"tooltip": "The algorithm used when sampling, this can affect the quality, speed, and style of the generated output."}),
                "scheduler": (SCHEDULERS, {"tooltip": "The scheduler controls how noise is gradually removed to form the image."}),
                "positive": ("CONDITIONING", {"tooltip": "The conditioning describing the attributes you want to include in the image."}),
                "negative": ("CONDITIONING", {"tooltip": "The conditioning describing the attributes you want to exclude from the image."}),
                "latent_image": ("LATENT", {"tooltip": "The latent image to denoise."}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "The amount of denoising applied, lower values will maintain the structure of the initial image allowing for image to image sampling."}),
            }
        }  # fmt: skip

    async def execute(
        self, ctx: NodeContext, seed: int, steps: int, positive: Conditioning, latent_image: Latent, **_: Any
    ) -> NodeReturn:
        result = Latent(latent_image.width, latent_image.height, latent_image.batch_size, seed, positive.text)
        final = result.frame_colours()[0]
        pbar = ctx.progress_bar(steps)
        for step in range(steps):
            await asyncio.sleep(ctx.options.step_seconds)
            preview = None
            if ctx.options.previews:
                colour = blend((128, 128, 128), final, (step + 1) / steps)
                frame = Image.new("RGB", (latent_image.width, latent_image.height), colour)
                preview = await asyncio.to_thread(encode_preview, frame)
            # The sampler callback fires after each step, so values run 1..steps.
            pbar.update_absolute(step + 1, steps, preview)
        return (result,)


class VAEDecode(Node):
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The decoded image.",)
    CATEGORY = "latent"
    DESCRIPTION = "Decodes latent images back into pixel space images."
    DISPLAY_NAME = "VAE Decode"

    @classmethod
    def input_types(cls, options: SimulatorOptions) -> dict[str, dict[str, Any]]:
        return {
            "required": {
                "samples": ("LATENT", {"tooltip": "The latent to be decoded."}),
                "vae": ("VAE", {"tooltip": "The VAE model used for decoding the latent."}),
            }
        }

    async def execute(self, ctx: NodeContext, samples: Latent, vae: ModelHandle, **_: Any) -> NodeReturn:
        return (ImageBatch(samples.width, samples.height, samples.frame_colours()),)


class SaveImage(Node):
    OUTPUT_NODE = True
    CATEGORY = "image"
    DESCRIPTION = "Saves the input images to your ComfyUI output directory."
    DISPLAY_NAME = "Save Image"
    FILE_TYPE = "output"
    COMPRESS_LEVEL = 4

    @classmethod
    def input_types(cls, options: SimulatorOptions) -> dict[str, dict[str, Any]]:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to save."}),
                "filename_prefix": ("STRING", {"default": "ComfyUI", "tooltip": "The prefix for the file to save. This may include formatting information such as %date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }  # fmt: skip

    def output_folder(self, ctx: NodeContext) -> Path:
        return ctx.options.output_dir

    async def execute(
        self,
        ctx: NodeContext,
        images: ImageBatch,
        filename_prefix: str = "ComfyUI",
        prompt: dict[str, Any] | None = None,
        extra_pnginfo: dict[str, Any] | None = None,
        **_: Any,
    ) -> NodeReturn:
        results = await asyncio.to_thread(self._save, ctx, images, filename_prefix, prompt, extra_pnginfo)
        return {"ui": {"images": results}}

    def _save(
        self,
        ctx: NodeContext,
        images: ImageBatch,
        filename_prefix: str,
        prompt: dict[str, Any] | None,
        extra_pnginfo: dict[str, Any] | None,
    ) -> list[dict[str, str]]:
        path = get_save_image_path(filename_prefix, self.output_folder(ctx), images.width, images.height)
        metadata = _png_metadata(prompt, extra_pnginfo)
        results = []
        for batch_number in range(images.batch_size):
            name = path.filename.replace("%batch_num%", str(batch_number))
            file = f"{name}_{path.counter + batch_number:05}_.png"
            images.frame(batch_number).save(path.folder / file, pnginfo=metadata, compress_level=self.COMPRESS_LEVEL)
            results.append({"filename": file, "subfolder": path.subfolder, "type": self.FILE_TYPE})
        return results


def _png_metadata(prompt: dict[str, Any] | None, extra_pnginfo: dict[str, Any] | None) -> PngInfo:
    metadata = PngInfo()
    if prompt is not None:
        metadata.add_text("prompt", json.dumps(prompt))
    for key, value in (extra_pnginfo or {}).items():
        metadata.add_text(key, json.dumps(value))
    return metadata


class PreviewImage(SaveImage):
    DESCRIPTION = "Saves the input images to your ComfyUI output directory."
    DISPLAY_NAME = "Preview Image"
    FILE_TYPE = "temp"
    COMPRESS_LEVEL = 1

    @classmethod
    def input_types(cls, options: SimulatorOptions) -> dict[str, dict[str, Any]]:
        return {"required": {"images": ("IMAGE",)}, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def output_folder(self, ctx: NodeContext) -> Path:
        return ctx.options.temp_dir

    async def execute(
        self,
        ctx: NodeContext,
        images: ImageBatch,
        filename_prefix: str = "ComfyUI",
        prompt: dict[str, Any] | None = None,
        extra_pnginfo: dict[str, Any] | None = None,
        **_: Any,
    ) -> NodeReturn:
        # As ComfyUI's PreviewImage: a random prefix of its own (it declares no filename_prefix input).
        suffix = "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))
        return await super().execute(ctx, images, f"ComfyUI_temp_{suffix}", prompt, extra_pnginfo)


class SaveAnimatedWEBP(Node):
    OUTPUT_NODE = True
    CATEGORY = "image/animation"
    PYTHON_MODULE = "comfy_extras.nodes_images"
    METHODS: ClassVar[dict[str, int]] = {"default": 4, "fastest": 0, "slowest": 6}

    @classmethod
    def input_types(cls, options: SimulatorOptions) -> dict[str, dict[str, Any]]:
        return {
            "required": {
                "images": ("IMAGE",),
                "filename_prefix": ("STRING", {"default": "ComfyUI"}),
                "fps": ("FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0, "step": 0.01}),
                "lossless": ("BOOLEAN", {"default": True}),
                "quality": ("INT", {"default": 80, "min": 0, "max": 100}),
                "method": (list(cls.METHODS.keys()),),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    async def execute(
        self,
        ctx: NodeContext,
        images: ImageBatch,
        fps: float,
        filename_prefix: str = "ComfyUI",
        lossless: bool = True,
        quality: int = 80,
        method: str = "default",
        **_: Any,
    ) -> NodeReturn:
        result = await asyncio.to_thread(self._save, ctx, images, filename_prefix, fps, lossless, quality, method)
        return {"ui": {"images": [result], "animated": (images.batch_size != 1,)}}

    def _save(
        self, ctx: NodeContext, images: ImageBatch, prefix: str, fps: float, lossless: bool, quality: int, method: str
    ) -> dict[str, str]:
        path = get_save_image_path(prefix, ctx.options.output_dir, images.width, images.height)
        frames = [images.frame(i) for i in range(images.batch_size)]
        file = f"{path.filename}_{path.counter:05}_.webp"
        frames[0].save(
            path.folder / file,
            save_all=True,
            duration=int(1000.0 / fps),
            append_images=frames[1:],
            lossless=lossless,
            quality=quality,
            method=self.METHODS.get(method, 4),
        )
        return {"filename": file, "subfolder": path.subfolder, "type": "output"}
