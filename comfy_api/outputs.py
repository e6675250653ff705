"""A job's outputs as ComfyUI names them in /history and the websocket's `executed`:
`{node id: {"images": [{"filename", "subfolder", "type"}]}}`.

The names are the project's own, never a GPU machine's: `filename` is the stored file's name and
`subfolder` the job's id, which is what /view looks them up by (comfy_api.views_files).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePosixPath
from typing import Any

from jobs.models import JobOutput

# What /view answers for: outputs are kept as the project's files, whatever ComfyUI's folder was.
OUTPUT_TYPES = frozenset({"output", "temp"})


def output_file(output: JobOutput) -> dict[str, str]:
    """One output as ComfyUI's `{filename, subfolder, type}`."""
    return {
        "filename": PurePosixPath(output.file.name or "").name,
        "subfolder": str(output.job_id),
        "type": output.comfy_type if output.comfy_type in OUTPUT_TYPES else "output",
    }


def node_outputs(outputs: Iterable[JobOutput]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """`{node id: {kind: [file, ...]}}` in the order the outputs were stored."""
    shaped: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for output in outputs:
        shaped.setdefault(output.node_id, {}).setdefault(output.kind or "images", []).append(output_file(output))
    return shaped
