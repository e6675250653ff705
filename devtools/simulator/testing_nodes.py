"""Nodes of ComfyUI's execution test pack and the probe nodes used to record the traces.

TestSleep reports through a ProgressBar about every 10 ms and is a coroutine node, so ComfyUI
runs it as a task alongside other nodes; TestParallelSleep expands into a subgraph of three
TestSleep nodes (ids "<node>.0.0.<n>"); TestSyncError and ProbeRaiseOOM fail the way the traces
show; ProbePreviewSampler sends a preview image with each step.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from PIL import Image

from .graph import GraphBuilder
from .nodes import (
    ANY,
    MAX_PREVIEW_RESOLUTION,
    Node,
    NodeContext,
    NodeReturn,
    OutOfMemoryError,
    encode_preview,
)
from .options import SimulatorOptions
from .tensors import ImageBatch, average_colour, blend, colour_from_text


class TestSleep(Node):
    RETURN_TYPES = (ANY,)
    IS_ASYNC = True
    CATEGORY = "_for_testing"
    DISPLAY_NAME = "Test Sleep"
    PYTHON_MODULE = "custom_nodes.testing-pack"

    @classmethod
    def input_types(cls, options: SimulatorOptions) -> dict[str, dict[str, Any]]:
        return {
            "required": {
                "value": (ANY, {}),
                "seconds": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 9999.0, "step": 0.01, "tooltip": "The amount of seconds to sleep."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }  # fmt: skip

    async def execute(self, ctx: NodeContext, value: Any, seconds: float, **_: Any) -> NodeReturn:
        pbar = ctx.progress_bar(seconds)
        start = time.time()
        expiration = start + seconds
        now = start
        while now < expiration:
            now = time.time()
            pbar.update_absolute(now - start)
            await asyncio.sleep(0.01)
        return (value,)


class TestParallelSleep(Node):
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_NODE = True
    CATEGORY = "_for_testing"
    DISPLAY_NAME = "Test Parallel Sleep"
    PYTHON_MODULE = "custom_nodes.testing-pack"

    @classmethod
    def input_types(cls, options: SimulatorOptions) -> dict[str, dict[str, Any]]:
        sleep = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01})
        return {
            "required": {
                "image1": ("IMAGE",),
                "image2": ("IMAGE",),
                "image3": ("IMAGE",),
                "sleep1": sleep,
                "sleep2": sleep,
                "sleep3": sleep,
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    async def execute(
        self,
        ctx: NodeContext,
        image1: ImageBatch,
        image2: ImageBatch,
        image3: ImageBatch,
        sleep1: float,
        sleep2: float,
        sleep3: float,
        **_: Any,
    ) -> NodeReturn:
        # Expands into three TestSleep nodes and an average, run as a subgraph of this node.
        graph = GraphBuilder(prefix=f"{ctx.unique_id}.0.0.")
        sleep_node1 = graph.node("TestSleep", value=image1, seconds=sleep1)
        sleep_node2 = graph.node("TestSleep", value=image2, seconds=sleep2)
        sleep_node3 = graph.node("TestSleep", value=image3, seconds=sleep3)
        blend = graph.node(
            "TestVariadicAverage",
            input1=graph.out(sleep_node1),
            input2=graph.out(sleep_node2),
            input3=graph.out(sleep_node3),
        )
        return {"result": (graph.out(blend),), "expand": graph.finalize()}


class TestVariadicAverage(Node):
    RETURN_TYPES = ("IMAGE",)
    CATEGORY = "_for_testing"
    DISPLAY_NAME = "Variadic Average"
    PYTHON_MODULE = "custom_nodes.testing-pack"

    @classmethod
    def input_types(cls, options: SimulatorOptions) -> dict[str, dict[str, Any]]:
        return {"required": {"input1": ("IMAGE",)}}

    async def execute(self, ctx: NodeContext, input1: ImageBatch, **more: Any) -> NodeReturn:
        inputs = [input1]
        while f"input{len(inputs) + 1}" in more:
            inputs.append(more[f"input{len(inputs) + 1}"])
        frames = tuple(average_colour([batch.frames[0] for batch in inputs]) for _ in range(input1.batch_size))
        return (ImageBatch(input1.width, input1.height, frames),)


class TestSyncError(Node):
    RETURN_TYPES = (ANY,)
    CATEGORY = "_for_testing/async"
    DISPLAY_NAME = "Test Sync Error"
    PYTHON_MODULE = "custom_nodes.testing-pack"

    @classmethod
    def input_types(cls, options: SimulatorOptions) -> dict[str, dict[str, Any]]:
        return {"required": {"value": (ANY, {})}}

    async def execute(self, ctx: NodeContext, value: Any, **_: Any) -> NodeReturn:
        raise RuntimeError("Intentional sync execution error for testing")


class ProbeRaiseOOM(Node):
    RETURN_TYPES = ("IMAGE",)
    CATEGORY = "_for_testing"
    PYTHON_MODULE = "custom_nodes.probe_nodes"

    @classmethod
    def input_types(cls, options: SimulatorOptions) -> dict[str, dict[str, Any]]:
        return {"required": {"value": (ANY, {})}}

    async def execute(self, ctx: NodeContext, value: Any, **_: Any) -> NodeReturn:
        raise OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 23.64 GiB of which "
            "1.02 GiB is free."
        )


class ProbePreviewSampler(Node):
    RETURN_TYPES = ("IMAGE",)
    CATEGORY = "_for_testing"
    PYTHON_MODULE = "custom_nodes.probe_nodes"

    @classmethod
    def input_types(cls, options: SimulatorOptions) -> dict[str, dict[str, Any]]:
        return {
            "required": {
                "image": ("IMAGE",),
                "steps": ("INT", {"default": 6, "min": 1, "max": 1000}),
                "seconds_per_step": ("FLOAT", {"default": 0.05, "min": 0.0, "max": 60.0, "step": 0.01}),
            }
        }

    async def execute(
        self, ctx: NodeContext, image: ImageBatch, steps: int, seconds_per_step: float, **_: Any
    ) -> NodeReturn:
        pbar = ctx.progress_bar(steps)
        target = image.frames[0]
        for step in range(steps):
            await asyncio.sleep(seconds_per_step)
            colour = blend(colour_from_text(f"{ctx.unique_id}:{steps}"), target, (step + 1) / steps)
            preview = await asyncio.to_thread(
                encode_preview, Image.new("RGB", (MAX_PREVIEW_RESOLUTION, MAX_PREVIEW_RESOLUTION), colour)
            )
            pbar.update_absolute(step + 1, steps, preview)
        return (image,)
