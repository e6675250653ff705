"""What a workflow will make ComfyUI compute: image size, frames, batch and sampler steps, followed
node by node along the links, so a bound cannot be walked past by a string (`"steps": "1e9"`), a
number that comes through a link (a width from a primitive node) or a node that multiplies size
(`ImageScaleBy`, `LatentUpscaleBy`, `RepeatLatentBatch`, frame interpolation, upscale models).

Each node's output is described by an `Extent`: ranges for its image sides (in pixels; latents are
counted at their decoded size), frames and batch. Every range is an upper bound that may only grow
along the graph: an input that joins two images counts as the larger of them (a batch of both, for
inputs that concatenate batches). Sizes nobody can know before the run (an image loaded from disk)
are unbounded above and assumed at least `UNKNOWN_SIDE_MIN` on a side, so a factor that would take
such an image past the limit is still refused.

The rules are read from input names, as ComfyUI's core nodes use them, so custom nodes that follow
the same names are bounded too; an administrator restricts what else may run with
WORKFLOW_NODE_CLASSES_ALLOWED / _DENIED.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any

from django.conf import settings

from comfyui.workflow import is_link
from jobs.workflow_validation.graph import Workflow, inputs_of, links_of, where
from jobs.workflow_validation.values import ONE, UNKNOWN, Span, as_number, number_text

# An image whose size is unknown before it runs counts as at least this on a side: the models such
# workflows run work at 512 and above, and "at least 1" would let any factor through.
UNKNOWN_SIDE_MIN = 512.0
# An upscale model's factor comes from its file name ("4x-UltraSharp", "RealESRGAN_x4plus");
# a name that does not say counts as the most common factor.
UPSCALE_MODEL_FACTOR_DEFAULT = 4.0
MEGAPIXEL = 1024 * 1024  # ComfyUI's ImageScaleToTotalPixels counts megapixels of 1024 x 1024

STEPS_INPUTS = ("steps",)
# Set a side outright; 0 keeps the image's aspect ratio (ImageScale, LatentUpscale).
WIDTH_INPUTS = ("width", "custom_width")
HEIGHT_INPUTS = ("height", "custom_height")
# Multiply both sides.
SCALE_INPUTS = ("scale_by", "upscale_by", "scale_factor", "upscale_factor", "rescale_factor", "resize_factor")
PAD_WIDTH_INPUTS = ("left", "right")
PAD_HEIGHT_INPUTS = ("top", "bottom")
# Set the frame count ("frame_load_cap" 0 means every frame of a loaded video: unknown).
FRAME_INPUTS = ("frames", "length", "video_frames", "num_frames", "frame_count", "video_length", "frame_load_cap")
# Inputs named so that carry an image in some node packs (RIFE VFI's "frames"): a link there is an image.
IMAGE_OR_NUMBER_INPUTS = ("frames",)
BATCH_INPUTS = ("batch_size", "amount")
COST_INPUTS = frozenset(
    (
        *STEPS_INPUTS,
        *WIDTH_INPUTS,
        *HEIGHT_INPUTS,
        *SCALE_INPUTS,
        *PAD_WIDTH_INPUTS,
        *PAD_HEIGHT_INPUTS,
        *FRAME_INPUTS,
        *BATCH_INPUTS,
        "resolution",
        "megapixels",
        "largest_size",
        "multiplier",
        "spacing_width",
    )
)
# Linked inputs that carry models, prompts and settings, never an image or a latent.
SHAPELESS_INPUTS = frozenset(
    (
        "model",
        "clip",
        "vae",
        "positive",
        "negative",
        "control_net",
        "upscale_model",
        "clip_vision",
        "clip_vision_output",
        "style_model",
        "guider",
        "sampler",
        "sigmas",
        "noise",
        "motion_model",
        "context_options",
        "ipadapter",
    )
)
SHAPELESS_PREFIXES = ("conditioning", "clip_", "model_")
# Inputs that concatenate batches (ImageBatch, LatentBatch, ImageBatchMulti): their batches add up.
BATCH_JOIN_INPUT = re.compile(r"^(image|images|samples|latent|latents|mask|masks)_?\d+$")
# Nodes that hold one number (core PrimitiveInt/PrimitiveFloat, and the int/float nodes of the
# common node packs): their output is that number.
CONSTANT_CLASS = re.compile(r"primitive|constant|literal|integer|float|number|int$|^int", re.IGNORECASE)
# Nodes that report an image's size: output index -> what it reports.
SIZE_READERS: dict[str, dict[int, str]] = {
    "GetImageSize": {0: "width", 1: "height", 2: "images"},
    "GetImageSize+": {0: "width", 1: "height", 2: "images"},
    "GetImageSizeAndCount": {1: "width", 2: "height", 3: "images"},
    "ImageResize+": {1: "width", 2: "height"},
}
FRAME_INTERPOLATION_CLASS = re.compile(r"vfi|interpolat", re.IGNORECASE)
UPSCALE_FACTOR_IN_NAME = re.compile(r"(?:^|[^0-9a-z])(\d{1,2})x|x(\d{1,2})(?![0-9])", re.IGNORECASE)


@dataclass(frozen=True)
class Extent:
    width: Span
    height: Span
    frames: Span
    batch: Span

    @property
    def pixels(self) -> Span:
        return self.width * self.height

    @property
    def images(self) -> Span:
        return self.frames * self.batch

    def join(self, other: Extent) -> Extent:
        return Extent(
            self.width.join(other.width),
            self.height.join(other.height),
            self.frames.join(other.frames),
            self.batch.join(other.batch),
        )


UNKNOWN_SIDE = Span(UNKNOWN_SIDE_MIN, math.inf)
UNKNOWN_EXTENT = Extent(UNKNOWN_SIDE, UNKNOWN_SIDE, UNKNOWN, UNKNOWN)


def cost_problems(workflow: Workflow, order: list[str]) -> list[str]:
    """Every node whose steps, image size, frames or batch would pass a bound; `order` lists each
    node after the nodes it links from (graph.topological_order)."""
    evaluation = CostEvaluation(workflow)
    for node_id in order:
        evaluation.visit(node_id)
    return evaluation.problems


class NodeNumbers:
    """A node's cost inputs as numbers: constants as ComfyUI casts them, links followed to the
    nodes whose value is known. Records a problem for each one that cannot be bounded."""

    def __init__(self, evaluation: CostEvaluation, node_id: str, node: dict[str, Any]) -> None:
        self.evaluation = evaluation
        self.node_id = node_id
        self.node = node
        self.inputs = inputs_of(node)
        self.read: dict[str, Span | None] = {}

    def get(self, name: str) -> Span | None:
        if name not in self.read:
            self.read[name] = self._read(name) if name in self.inputs else None
        return self.read[name]

    def first(self, names: tuple[str, ...]) -> tuple[str, Span] | None:
        for name in names:
            value = self.get(name)
            if value is not None:
                return name, value
        return None

    def describe(self, name: str) -> str:
        value = self.read.get(name)
        text = f"input '{name}' = {value.text()}" if value is not None else f"input '{name}'"
        if is_link(self.inputs[name]):
            upstream = str(self.inputs[name][0])
            text += f" (from node {upstream}, {self.evaluation.workflow[upstream]['class_type']})"
        return text

    def _read(self, name: str) -> Span | None:
        value = self.inputs[name]
        if is_link(value):
            upstream, index = str(value[0]), value[1]
            known = self.evaluation.values.get(upstream, {}).get(index)
            if known is not None and math.isinf(known.lo):
                self.evaluation.problems.append(
                    f"{where(self.node_id, self.node)}: input '{name}' (from node {upstream}) is not a finite number"
                )
                return None
            if known is None and name not in IMAGE_OR_NUMBER_INPUTS:
                upstream_class = self.evaluation.workflow[upstream]["class_type"]
                self.evaluation.problems.append(
                    f"{where(self.node_id, self.node)}: input '{name}' comes from node {upstream} ({upstream_class}), "
                    "whose value cannot be known before the workflow runs; give a number or a primitive node"
                )
            return known
        number = as_number(value)
        if number is not None and not math.isfinite(number):
            self.evaluation.problems.append(f"{where(self.node_id, self.node)}: input '{name}' is not a finite number")
            return None
        return None if number is None else Span.exactly(number)


class CostEvaluation:
    def __init__(self, workflow: Workflow) -> None:
        self.workflow = workflow
        self.extents: dict[str, Extent | None] = {}  # None: the node holds a number, not an image
        self.values: dict[str, dict[int, Span]] = {}  # the numbers a node outputs, by output index
        self.problems: list[str] = []

    def visit(self, node_id: str) -> None:
        node = self.workflow[node_id]
        numbers = NodeNumbers(self, node_id, node)
        if self._is_constant(node):
            self.extents[node_id] = None
            constant = self._constant(node)
            self.values[node_id] = {} if constant is None else {0: constant}
            return
        self._check_steps(numbers)
        upstream = self._image_inputs(node)
        base = self._joined(node, upstream)
        extent, causes = self._apply_rules(numbers, base)
        self._check_bounds(numbers, upstream, extent, causes)
        self.extents[node_id] = extent
        reader = SIZE_READERS.get(node["class_type"])
        if reader:
            self.values[node_id] = {index: getattr(extent, measure) for index, measure in reader.items()}

    def _is_constant(self, node: dict[str, Any]) -> bool:
        """A node that holds one number: named like one, with one input that is not an image (a
        constant, or a link to another constant node)."""
        inputs = inputs_of(node)
        if len(inputs) != 1 or not CONSTANT_CLASS.search(node["class_type"]):
            return False
        (value,) = inputs.values()
        return not is_link(value) or (str(value[0]) in self.extents and self.extents[str(value[0])] is None)

    def _constant(self, node: dict[str, Any]) -> Span | None:
        """The number a constant node holds (followed through a chain of them). Not finite counts
        as unbounded: refused where a cost input uses it, harmless where a prompt text is "inf"."""
        (value,) = inputs_of(node).values()
        if is_link(value):
            return self.values.get(str(value[0]), {}).get(value[1])
        number = as_number(value)
        if number is None:
            return None
        return Span.exactly(number) if math.isfinite(number) else Span(math.inf, math.inf)

    # --- what flows in -------------------------------------------------------------------------

    def _image_inputs(self, node: dict[str, Any]) -> list[tuple[str, Extent]]:
        """The node's linked inputs that carry an image or a latent, with what each may be."""
        found = []
        for name, upstream, index in links_of(node):
            extent = self.extents.get(upstream)
            if extent is not None and carries_image(name) and index not in self.values.get(upstream, {}):
                found.append((name, extent))
        return found

    def _joined(self, node: dict[str, Any], upstream: list[tuple[str, Extent]]) -> Extent | None:
        """What the node's image inputs may be together; None for a node without any."""
        if not upstream:
            return None
        joined = upstream[0][1]
        for _, extent in upstream[1:]:
            joined = joined.join(extent)
        parts = [extent for name, extent in upstream if BATCH_JOIN_INPUT.match(name)]
        stitched = parts if node["class_type"] == "ImageStitch" else []
        concatenated = [] if stitched else parts
        if len(concatenated) > 1:
            joined = replace(joined, batch=_total(e.batch for e in concatenated))
        if len(stitched) > 1:
            joined = _stitched(joined, stitched, inputs_of(node).get("direction"))
        return joined

    # --- what the node does to it --------------------------------------------------------------

    def _apply_rules(self, numbers: NodeNumbers, base: Extent | None) -> tuple[Extent, dict[str, list[str]]]:
        causes: dict[str, list[str]] = {"pixels": [], "frames": [], "batch": []}
        extent = base or UNKNOWN_EXTENT
        extent = self._sides(numbers, extent, causes["pixels"])
        if base is None and causes["pixels"]:
            # A node that makes an image of a given size from nothing (EmptyLatentImage) makes one.
            extent = replace(extent, frames=ONE, batch=ONE)
        extent = _frames(numbers, extent, causes["frames"], counted=base is not None)
        extent = _batch(numbers, extent, causes["batch"], counted=base is not None)
        causes["images"] = causes["frames"] + causes["batch"]
        return extent, causes

    def _sides(self, numbers: NodeNumbers, extent: Extent, causes: list[str]) -> Extent:
        before = extent
        extent = _absolute_sides(numbers, extent, causes)
        extent = _padded(numbers, extent, causes)
        scaled = False
        for name in SCALE_INPUTS:
            factor = numbers.get(name)
            if factor is not None:
                extent = replace(extent, width=extent.width * factor, height=extent.height * factor)
                causes.append(numbers.describe(name))
                scaled = True
        if not scaled and extent == before and "upscale_model" in numbers.inputs:
            factor = Span.exactly(self._upscale_model_factor(numbers.inputs["upscale_model"]))
            extent = replace(extent, width=extent.width * factor, height=extent.height * factor)
            causes.append(f"its upscale model (x{factor.text()})")
        return extent

    def _upscale_model_factor(self, link: Any) -> float:
        if not is_link(link):
            return UPSCALE_MODEL_FACTOR_DEFAULT
        model_name = inputs_of(self.workflow[str(link[0])]).get("model_name")
        if not isinstance(model_name, str):
            return UPSCALE_MODEL_FACTOR_DEFAULT
        factors = [int(a or b) for a, b in UPSCALE_FACTOR_IN_NAME.findall(model_name)]
        return float(max(factors)) if factors else UPSCALE_MODEL_FACTOR_DEFAULT

    # --- bounds --------------------------------------------------------------------------------

    def _check_steps(self, numbers: NodeNumbers) -> None:
        for name in STEPS_INPUTS:
            steps = numbers.get(name)
            if steps is not None and steps.over(settings.WORKFLOW_MAX_STEPS):
                self.problems.append(
                    f"{where(numbers.node_id, numbers.node)}: {numbers.describe(name)} exceeds the limit of "
                    f"{settings.WORKFLOW_MAX_STEPS} steps"
                )

    def _check_bounds(
        self, numbers: NodeNumbers, upstream: list[tuple[str, Extent]], extent: Extent, causes: dict[str, list[str]]
    ) -> None:
        """Report a bound where it is first passed, not again at every node downstream."""
        limits = {
            "pixels": settings.WORKFLOW_MAX_PIXELS,
            "frames": settings.WORKFLOW_MAX_FRAMES,
            "batch": settings.WORKFLOW_MAX_BATCH,
            "images": max(settings.WORKFLOW_MAX_FRAMES, settings.WORKFLOW_MAX_BATCH),
        }
        reported: set[str] = set()
        for measure, limit in limits.items():
            value: Span = getattr(extent, measure)
            if not value.over(limit) or any(getattr(before, measure).over(limit) for _, before in upstream):
                continue
            if measure == "images" and reported & {"frames", "batch"}:
                continue  # one reason is enough
            reported.add(measure)
            joined = "joining inputs " + ", ".join(f"'{name}'" for name, _ in upstream)
            cause = ", ".join(causes[measure]) or joined
            self.problems.append(f"{where(numbers.node_id, numbers.node)}: {cause} {_outcome(measure, extent, limit)}")


def carries_image(input_name: str) -> bool:
    return input_name not in SHAPELESS_INPUTS and not input_name.startswith(SHAPELESS_PREFIXES)


def _total(spans: Any) -> Span:
    total = Span(0.0, 0.0)
    for span in spans:
        total = total + span
    return total


def _stitched(joined: Extent, parts: list[Extent], direction: Any) -> Extent:
    """ImageStitch puts images side by side ("left"/"right") or one above the other ("up"/"down")."""
    if direction in ("left", "right", None) or not isinstance(direction, str):
        joined = replace(joined, width=_total(p.width for p in parts))
    if direction in ("up", "down", None) or not isinstance(direction, str):
        joined = replace(joined, height=_total(p.height for p in parts))
    return joined


def _absolute_sides(numbers: NodeNumbers, extent: Extent, causes: list[str]) -> Extent:
    width, height = numbers.first(WIDTH_INPUTS), numbers.first(HEIGHT_INPUTS)
    new_width = extent.width if width is None or width[1].hi == 0 else width[1]
    new_height = extent.height if height is None or height[1].hi == 0 else height[1]
    # A zero side keeps the aspect ratio: it follows the other side's change.
    if width is not None and width[1].hi == 0 and height is not None and height[1].hi != 0:
        new_width = extent.width * height[1] / extent.height
    if height is not None and height[1].hi == 0 and width is not None and width[1].hi != 0:
        new_height = extent.height * width[1] / extent.width
    causes.extend(numbers.describe(found[0]) for found in (width, height) if found is not None)
    resolution = numbers.get("resolution")
    if resolution is not None:
        new_width = new_height = resolution
        causes.append(numbers.describe("resolution"))
    megapixels = numbers.get("megapixels")
    if megapixels is not None:
        side = Span(math.sqrt(megapixels.lo * MEGAPIXEL), math.sqrt(megapixels.hi * MEGAPIXEL))
        new_width = new_height = side
        causes.append(numbers.describe("megapixels"))
    largest = numbers.get("largest_size")
    if largest is not None:
        new_width = new_height = Span(min(extent.width.lo, extent.height.lo, largest.lo), largest.hi)
        causes.append(numbers.describe("largest_size"))
    return replace(extent, width=new_width, height=new_height)


def _padded(numbers: NodeNumbers, extent: Extent, causes: list[str]) -> Extent:
    for names, side in ((PAD_WIDTH_INPUTS, "width"), (PAD_HEIGHT_INPUTS, "height")):
        for name in names:
            pad = numbers.get(name)
            if pad is not None and pad.hi > 0:
                extent = replace(extent, **{side: getattr(extent, side) + pad})
                causes.append(numbers.describe(name))
    spacing = numbers.get("spacing_width")
    if spacing is not None and spacing.hi > 0:
        extent = replace(extent, width=extent.width + spacing, height=extent.height + spacing)
        causes.append(numbers.describe("spacing_width"))
    return extent


def _frames(numbers: NodeNumbers, extent: Extent, causes: list[str], *, counted: bool) -> Extent:
    """`counted`: the node's images already have a frame count, which a frame input may not lower."""
    for name in FRAME_INPUTS:
        frames = numbers.get(name)
        if frames is not None and not (name == "frame_load_cap" and frames.hi == 0):
            extent = replace(extent, frames=extent.frames.raised_to(frames) if counted else frames)
            causes.append(numbers.describe(name))
    multiplier = numbers.get("multiplier")
    if multiplier is not None and FRAME_INTERPOLATION_CLASS.search(numbers.node["class_type"]):
        extent = replace(extent, frames=extent.frames * multiplier.at_least_one())
        causes.append(numbers.describe("multiplier"))
    return extent


def _batch(numbers: NodeNumbers, extent: Extent, causes: list[str], *, counted: bool) -> Extent:
    batch_size = numbers.get("batch_size")
    if batch_size is not None:
        extent = replace(extent, batch=extent.batch.raised_to(batch_size) if counted else batch_size)
        causes.append(numbers.describe("batch_size"))
    amount = numbers.get("amount")
    if amount is not None:
        extent = replace(extent, batch=extent.batch * amount.at_least_one())
        causes.append(numbers.describe("amount"))
    return extent


def _outcome(measure: str, extent: Extent, limit: int) -> str:
    if measure == "pixels":
        pixels = extent.pixels
        if pixels.known:
            size = f"{number_text(extent.width.hi)}x{number_text(extent.height.hi)} ({number_text(pixels.hi)} pixels)"
            size = size if pixels.exact else f"up to {size}"
        else:
            size = f"at least {number_text(extent.width.lo)}x{number_text(extent.height.lo)} "
            size += f"({number_text(pixels.lo)} pixels)"
        return f"makes the image {size}; the limit is {limit} pixels"
    if measure == "frames":
        return f"makes {extent.frames.text()} frames; the limit is {limit} frames"
    if measure == "batch":
        return f"makes a batch of {extent.batch.text()}; the limit is {limit}"
    return f"makes {extent.images.text()} images (batch x frames); the limit is {limit} images"
