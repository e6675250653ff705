"""NODE_CLASS_MAPPINGS for the simulator and the `/object_info` view of it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .loader_nodes import LoadImage, LoadImageMask, MaskToImage
from .nodes import (
    CheckpointLoaderSimple,
    CLIPTextEncode,
    EmptyImage,
    EmptyLatentImage,
    KSampler,
    Node,
    PreviewImage,
    SaveAnimatedWEBP,
    SaveImage,
    VAEDecode,
)
from .options import SimulatorOptions
from .testing_nodes import (
    ProbePreviewSampler,
    ProbeRaiseOOM,
    TestParallelSleep,
    TestSleep,
    TestSyncError,
    TestVariadicAverage,
)


@dataclass
class NodeRegistry:
    """NODE_CLASS_MAPPINGS plus the `/object_info` view of it, for one simulator configuration."""

    options: SimulatorOptions
    classes: dict[str, type[Node]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.classes:
            self.classes = {cls.__name__: cls for cls in ALL_NODES}

    def __contains__(self, class_type: object) -> bool:
        return class_type in self.classes

    def __getitem__(self, class_type: str) -> type[Node]:
        return self.classes[class_type]

    def __iter__(self) -> Iterator[str]:
        return iter(self.classes)

    def get(self, class_type: str) -> type[Node] | None:
        return self.classes.get(class_type)

    def input_types(self, class_type: str) -> dict[str, dict[str, Any]]:
        return self.classes[class_type].input_types(self.options)

    def object_info(self, class_type: str) -> dict[str, Any]:
        cls = self.classes[class_type]
        inputs = cls.input_types(self.options)
        info: dict[str, Any] = {
            "input": inputs,
            "input_order": {category: list(values.keys()) for category, values in inputs.items()},
            "output": list(cls.RETURN_TYPES),
            "output_is_list": [False] * len(cls.RETURN_TYPES),
            "output_name": list(cls.RETURN_NAMES or cls.RETURN_TYPES),
            "name": class_type,
            "display_name": cls.DISPLAY_NAME or class_type,
            "description": cls.DESCRIPTION,
            "python_module": cls.PYTHON_MODULE,
            "category": cls.CATEGORY,
            "output_node": cls.OUTPUT_NODE,
        }
        if cls.OUTPUT_TOOLTIPS is not None:
            info["output_tooltips"] = list(cls.OUTPUT_TOOLTIPS)
        return info


ALL_NODES: tuple[type[Node], ...] = (
    CheckpointLoaderSimple,
    CLIPTextEncode,
    EmptyLatentImage,
    KSampler,
    VAEDecode,
    SaveImage,
    PreviewImage,
    EmptyImage,
    SaveAnimatedWEBP,
    LoadImage,
    LoadImageMask,
    MaskToImage,
    TestSleep,
    TestParallelSleep,
    TestVariadicAverage,
    TestSyncError,
    ProbeRaiseOOM,
    ProbePreviewSampler,
)
