"""Stand-ins for the torch values that flow between ComfyUI nodes.

The simulator never computes anything real: an image batch is a size plus one colour per frame,
a latent is a size plus a seed. What matters is that they print like torch tensors, because
ComfyUI puts `str(tensor)` into `execution_error.current_inputs`, and that they can be turned
into real PIL images when a node saves or previews them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image

Rgb = tuple[int, int, int]

# torch's print options: summarise tensors with more than 1000 elements, showing 3 edge items.
_SUMMARY_THRESHOLD = 1000
_EDGE_ITEMS = 3
_LINE_WIDTH = 80


@dataclass(frozen=True)
class ImageBatch:
    """ComfyUI's IMAGE: a [batch, height, width, 3] float tensor in 0..1."""

    width: int
    height: int
    frames: tuple[Rgb, ...]

    @property
    def batch_size(self) -> int:
        return len(self.frames)

    def frame(self, index: int) -> Image.Image:
        return Image.new("RGB", (self.width, self.height), self.frames[index])

    def __str__(self) -> str:
        shape = (self.batch_size, self.height, self.width, 3)
        return format_tensor(shape, lambda index: self.frames[index[0]][index[3]] / 255.0)


@dataclass(frozen=True)
class Mask:
    """ComfyUI's MASK: a [batch, height, width] float tensor in 0..1, here one value per frame."""

    width: int
    height: int
    values: tuple[float, ...]

    def __str__(self) -> str:
        shape = (len(self.values), self.height, self.width)
        return format_tensor(shape, lambda index: self.values[index[0]])


@dataclass(frozen=True)
class Latent:
    """ComfyUI's LATENT: `{"samples": tensor[batch, 4, height/8, width/8]}`; sizes here are in pixels."""

    width: int
    height: int
    batch_size: int
    seed: int | None = None
    text: str = ""

    def __str__(self) -> str:
        shape = (self.batch_size, 4, max(1, self.height // 8), max(1, self.width // 8))
        return "{'samples': " + format_tensor(shape, lambda index: 0.0) + "}"

    def frame_colours(self) -> tuple[Rgb, ...]:
        """Deterministic colours for what a sampler 'generated', one per batch item."""
        if self.seed is None:
            return tuple((0, 0, 0) for _ in range(self.batch_size))
        return tuple(colour_from_text(f"{self.seed}:{self.text}:{i}") for i in range(self.batch_size))


@dataclass(frozen=True, eq=False)
class ModelHandle:
    """MODEL, CLIP or VAE loaded from a checkpoint; printed like the Python object ComfyUI holds."""

    kind: str
    checkpoint: str

    def __str__(self) -> str:
        cls = {
            "MODEL": "comfy.model_patcher.ModelPatcher",
            "CLIP": "comfy.sd.CLIP",
            "VAE": "comfy.sd.VAE",
        }[self.kind]
        return f"<{cls} object at {id(self):#x}>"


@dataclass(frozen=True)
class Conditioning:
    """CONDITIONING: the encoded prompt text."""

    text: str

    def __str__(self) -> str:
        embedding = format_tensor((1, 77, 768), lambda index: 0.0)
        pooled = format_tensor((1, 768), lambda index: 0.0)
        return f"[[{embedding}, {{'pooled_output': {pooled}}}]]"


def colour_from_text(text: str) -> Rgb:
    digest = hashlib.sha256(text.encode()).digest()
    return digest[0], digest[1], digest[2]


def colour_from_int(colour: int) -> Rgb:
    """EmptyImage's `color` widget: 0xRRGGBB."""
    return (colour >> 16) & 0xFF, (colour >> 8) & 0xFF, colour & 0xFF


def blend(start: Rgb, end: Rgb, fraction: float) -> Rgb:
    """The colour `fraction` of the way from start to end (a sampler's preview converging)."""
    return (
        round(start[0] + (end[0] - start[0]) * fraction),
        round(start[1] + (end[1] - start[1]) * fraction),
        round(start[2] + (end[2] - start[2]) * fraction),
    )


def average_colour(colours: Sequence[Rgb]) -> Rgb:
    count = len(colours)
    return (
        round(sum(c[0] for c in colours) / count),
        round(sum(c[1] for c in colours) / count),
        round(sum(c[2] for c in colours) / count),
    )


def format_tensor(shape: Sequence[int], value_at: Callable[[tuple[int, ...]], float]) -> str:
    """Print a float tensor the way torch does (`tensor([[...]])`), reading only the shown items."""
    summarize = math.prod(shape) > _SUMMARY_THRESHOLD
    shown = _shown_values(shape, value_at, summarize)
    formatter = _value_formatter(shown)
    indent = len("tensor(")
    return "tensor(" + _format_dims(tuple(shape), (), value_at, indent, summarize, formatter) + ")"


def _shown_indices(size: int, summarize: bool) -> list[int | None]:
    """Indices torch prints along one dimension; None stands for the '...' gap."""
    if summarize and size > 2 * _EDGE_ITEMS:
        return [*range(_EDGE_ITEMS), None, *range(size - _EDGE_ITEMS, size)]
    return list(range(size))


def _shown_values(shape: Sequence[int], value_at: Callable[[tuple[int, ...]], float], summarize: bool) -> list[float]:
    values: list[float] = []

    def walk(prefix: tuple[int, ...]) -> None:
        if len(prefix) == len(shape):
            values.append(value_at(prefix))
            return
        for index in _shown_indices(shape[len(prefix)], summarize):
            if index is not None:
                walk((*prefix, index))

    walk(())
    return values


def _value_formatter(values: Sequence[float]) -> Callable[[float], str]:
    # torch prints integral float tensors as "0." and others with 4 decimals, all padded alike.
    if all(float(v).is_integer() for v in values):
        texts = [f"{v:.0f}." for v in values]
        width = max(len(t) for t in texts)
        return lambda v: f"{v:.0f}.".rjust(width)
    width = max(len(f"{v:.4f}") for v in values)
    return lambda v: f"{v:.4f}".rjust(width)


def _format_dims(
    shape: tuple[int, ...],
    prefix: tuple[int, ...],
    value_at: Callable[[tuple[int, ...]], float],
    indent: int,
    summarize: bool,
    formatter: Callable[[float], str],
) -> str:
    remaining = len(shape) - len(prefix)
    indices = _shown_indices(shape[len(prefix)], summarize)
    if remaining == 1:
        items = [" ..." if i is None else formatter(value_at((*prefix, i))) for i in indices]
        per_line = max(1, (_LINE_WIDTH - indent) // (len(formatter(0.0)) + 2))
        lines = [", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
        return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"
    slices = [
        "..." if i is None else _format_dims(shape, (*prefix, i), value_at, indent + 1, summarize, formatter)
        for i in indices
    ]
    return "[" + ("," + "\n" * (remaining - 1) + " " * (indent + 1)).join(slices) + "]"
