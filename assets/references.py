"""Asset references in a workflow: an input whose value is the string "asset:<asset id>".

A loader names its file by a string input (LoadImage's `image`, VHS_LoadVideo's `video`, LoadAudio's
`audio`); a workflow names an uploaded asset there as "asset:<id>", and the GPU worker puts the
asset into its ComfyUI's input folder and writes the name ComfyUI expects in its place
(jobs.tracking.inputs). Any input of any node may hold a reference; the loaders known here also say
what kind of media they read, so audio given to LoadImage is refused before it reaches a GPU.

A plain file name in a known loader's input names a file already in ComfyUI's input folder. It is
a user's string reaching ComfyUI's file system: a path (separators, "..", an absolute path) or an
annotation pointing at another folder ("x.png [output]", where other users' outputs are) is refused.

Another job's output is named the same way, as "output:<job id>/<n>" (its n-th output, 0-based, in
the order the API lists them; "output:<job id>" is its first): the job waits for that one to complete
(jobs.dependencies), and the worker places the output like an asset. In a pipeline request the
source may be a job's key there ("output:keyframe/0"), which becomes the new job's id at creation.

No Django here: the API checks references against the database (assets.selectors,
jobs.dependencies), the tracker reads them back from the job's stored workflow.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

ASSET_PREFIX = "asset:"
OUTPUT_PREFIX = "output:"
# The n of "output:<source>/<n>": a job keeps at most JOB_MAX_OUTPUTS outputs, well below this.
OUTPUT_INDEX_MAX = 9999
_OUTPUT_REFERENCE = re.compile(r"^output:([^/\s]{1,64})(?:/([0-9]{1,4}))?\Z")

IMAGE, VIDEO, AUDIO = "image", "video", "audio"

# What each known loader input reads: ComfyUI's core loaders and VideoHelperSuite's, the video pack
# animation workflows use. ComfyUI's LoadAudio lists audio and video files alike (it decodes both).
LOADER_KINDS: dict[tuple[str, str], frozenset[str]] = {
    ("LoadImage", "image"): frozenset({IMAGE}),
    ("LoadImageMask", "image"): frozenset({IMAGE}),
    ("LoadVideo", "file"): frozenset({VIDEO}),
    ("VHS_LoadVideo", "video"): frozenset({VIDEO}),
    ("VHS_LoadVideoFFmpeg", "video"): frozenset({VIDEO}),
    ("LoadAudio", "audio"): frozenset({AUDIO, VIDEO}),
    ("VHS_LoadAudioUpload", "audio"): frozenset({AUDIO}),
}

# ComfyUI's folder annotations (folder_paths.annotated_filepath): only the input folder is a user's.
_ANNOTATION = re.compile(r" \[(input|output|temp)\]$")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class AssetReference:
    node_id: str
    class_type: str
    input_name: str
    asset_id: uuid.UUID

    @property
    def accepted_kinds(self) -> frozenset[str] | None:
        """The media kinds this input reads; None when any will do (a node not known here)."""
        return LOADER_KINDS.get((self.class_type, self.input_name))

    @property
    def label(self) -> str:
        return f"node {self.node_id} ({self.class_type}): input {self.input_name!r}"


@dataclass(frozen=True)
class OutputReference:
    node_id: str
    class_type: str
    input_name: str
    # A job's id as text, or a job's key in a pipeline request.
    source: str
    index: int

    @property
    def label(self) -> str:
        return f"node {self.node_id} ({self.class_type}): input {self.input_name!r}"

    @property
    def job_id(self) -> uuid.UUID | None:
        """The upstream job's id, when the source is one (not a pipeline key)."""
        try:
            return uuid.UUID(self.source)
        except ValueError:
            return None

    @property
    def value(self) -> str:
        return f"{OUTPUT_PREFIX}{self.source}/{self.index}"


def output_reference(value: str) -> tuple[str, int] | None:
    """The source and n of one "output:<source>/<n>" value, or None when it is not one."""
    match = _OUTPUT_REFERENCE.match(value)
    return (match.group(1), int(match.group(2) or 0)) if match else None


def output_references(workflow: Any) -> tuple[list[OutputReference], list[str]]:
    """The workflow's references to other jobs' outputs, in a stable order (by node id, then input
    name), and the problems of the values that start like one but are not."""
    references: list[OutputReference] = []
    problems: list[str] = []
    for node_id, node in _nodes(workflow):
        class_type = str(node.get("class_type", ""))
        inputs = node.get("inputs")
        for input_name, value in sorted(inputs.items()) if isinstance(inputs, dict) else ():
            if not isinstance(value, str) or not value.startswith(OUTPUT_PREFIX):
                continue
            match = _OUTPUT_REFERENCE.match(value)
            if match is None:
                problems.append(
                    f"node {node_id} ({class_type}): input {input_name!r} = {value[:80]!r} is not an output "
                    f'reference; use "output:<job id>/<n>" (n from 0 to {OUTPUT_INDEX_MAX})'
                )
                continue
            index = int(match.group(2) or 0)
            references.append(OutputReference(node_id, class_type, str(input_name), match.group(1), index))
    return references, problems


def asset_references(workflow: Any) -> tuple[list[AssetReference], list[str]]:
    """The workflow's asset references, in a stable order (by node id, then input name), and the
    problems of the values that look like references but are not (each names node and input)."""
    references: list[AssetReference] = []
    problems: list[str] = []
    for node_id, node in _nodes(workflow):
        class_type = str(node.get("class_type", ""))
        inputs = node.get("inputs")
        for input_name, value in sorted(inputs.items()) if isinstance(inputs, dict) else ():
            if not isinstance(value, str):
                continue
            if value.startswith(ASSET_PREFIX):
                try:
                    asset_id = uuid.UUID(value[len(ASSET_PREFIX) :])
                except ValueError:
                    problems.append(
                        f"node {node_id} ({class_type}): input {input_name!r} = {value[:80]!r} is not an asset "
                        'reference; use "asset:<asset id>" with the id POST /api/assets/ answered'
                    )
                    continue
                references.append(AssetReference(node_id, class_type, str(input_name), asset_id))
            elif (class_type, input_name) in LOADER_KINDS and not value.startswith(OUTPUT_PREFIX):
                problem = file_name_problem(value)
                if problem:
                    problems.append(f"node {node_id} ({class_type}): input {input_name!r} = {value[:80]!r} {problem}")
    return references, problems


def file_name_problem(value: str) -> str | None:
    """Why a plain name in a loader's input may not reach ComfyUI's file system, or None."""
    name = value
    annotation = _ANNOTATION.search(name)
    if annotation is not None:
        if annotation.group(1) != "input":
            return "reads from ComfyUI's output or temp folder; upload the file as an asset instead"
        name = name[: annotation.start()]
    if "/" in name or "\\" in name or ".." in name or _WINDOWS_DRIVE.match(name) or "\x00" in name:
        return 'is a path, not a file name; upload the file as an asset and use "asset:<asset id>"'
    return None


def distinct_assets(references: list[AssetReference]) -> list[uuid.UUID]:
    """Each referenced asset once, in the order of its first reference: its index in the job."""
    return list(dict.fromkeys(reference.asset_id for reference in references))


def _nodes(workflow: Any) -> list[tuple[str, dict[str, Any]]]:
    if not isinstance(workflow, dict):
        return []
    nodes = [(str(node_id), node) for node_id, node in workflow.items() if isinstance(node, dict)]
    return sorted(nodes, key=lambda item: _node_order(item[0]))


def _node_order(node_id: str) -> tuple[int, int, str]:
    # Numeric ids in numeric order ("2" before "10"), then any others by name.
    numeric = node_id.isascii() and node_id.isdigit() and len(node_id) <= 18
    return (0, int(node_id), "") if numeric else (1, 0, node_id)
