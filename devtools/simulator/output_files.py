"""Where saved files go and how `/view` finds them again (ComfyUI's folder_paths rules)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from .options import SimulatorOptions

FILE_TYPES = ("output", "input", "temp")


@dataclass(frozen=True)
class SavePath:
    folder: Path
    filename: str
    counter: int
    subfolder: str


def directory_for_type(options: SimulatorOptions, file_type: str) -> Path | None:
    return {"output": options.output_dir, "input": options.input_dir, "temp": options.temp_dir}.get(file_type)


def annotated_filepath(name: str) -> tuple[str, str | None]:
    """Split ComfyUI's "name.png [output]" annotation into the name and the folder type."""
    for file_type in FILE_TYPES:
        suffix = f" [{file_type}]"
        if name.endswith(suffix):
            return name[: -len(suffix)], file_type
    return name, None


def get_save_image_path(filename_prefix: str, output_dir: Path, width: int = 0, height: int = 0) -> SavePath:
    """The next free `<prefix>_NNNNN_` counter, found by scanning the folder, so it survives restarts."""
    if "%" in filename_prefix:
        filename_prefix = _compute_vars(filename_prefix, width, height)
    normalized = os.path.normpath(filename_prefix)
    subfolder = os.path.dirname(normalized)
    filename = os.path.basename(normalized)
    folder = output_dir / subfolder
    if os.path.commonpath((str(output_dir), os.path.abspath(folder))) != str(output_dir):
        # A plain Exception, as ComfyUI raises it: execution_error reports exception_type "Exception".
        raise Exception(
            "**** ERROR: Saving image outside the output folder is not allowed."
            f"\n full_output_folder: {os.path.abspath(folder)}"
            f"\n         output_dir: {output_dir}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    counters = [_counter_of(name, filename) for name in os.listdir(folder)]
    used = [c for c in counters if c is not None]
    return SavePath(folder=folder, filename=filename, counter=max(used) + 1 if used else 1, subfolder=subfolder)


def _counter_of(existing: str, filename: str) -> int | None:
    prefix_length = len(filename)
    prefix = existing[: prefix_length + 1]
    if os.path.normcase(prefix[:-1]) != os.path.normcase(filename) or prefix[-1:] != "_":
        return None
    try:
        return int(existing[prefix_length + 1 :].split("_", maxsplit=1)[0])
    except ValueError:
        return 0


def _compute_vars(text: str, width: int, height: int) -> str:
    now = time.localtime()
    replacements = {
        "%width%": str(width),
        "%height%": str(height),
        "%year%": str(now.tm_year),
        "%month%": str(now.tm_mon).zfill(2),
        "%day%": str(now.tm_mday).zfill(2),
        "%hour%": str(now.tm_hour).zfill(2),
        "%minute%": str(now.tm_min).zfill(2),
        "%second%": str(now.tm_sec).zfill(2),
    }
    for key, value in replacements.items():
        text = text.replace(key, value)
    return text
