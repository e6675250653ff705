"""Workflows the tests submit, in ComfyUI's API format."""

from __future__ import annotations

from typing import Any


def text_to_image(
    *,
    steps: int = 4,
    batch_size: int = 1,
    seed: int = 7,
    width: int = 96,
    height: int = 64,
    ckpt: str = "sd_xl_base_1.0.safetensors",
    prompt: str = "a red fox, anime",
    negative: str = "blurry",
    prefix: str = "t2i",
    save: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The standard SD graph: checkpoint, two prompts, empty latent, KSampler, VAE decode, save.

    The simulator's checkpoint list holds sd_xl_base_1.0 (its default here)."""
    saver = save or {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}}
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": batch_size}},
        "5": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0],
                "seed": seed,
                "steps": steps,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "positive": ["2", 0],
                "negative": ["3", 0],
                "latent_image": ["4", 0],
                "denoise": 1.0,
            },
        },
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": saver,
    }
