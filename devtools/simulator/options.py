"""What the simulator is started with, shared by `python -m devtools.simulator` and `manage.py comfyui_sim`."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Checkpoints the simulator pretends are installed. "anime_v3.safetensors" is deliberately absent:
# missing_model.jsonl records ComfyUI rejecting it with value_not_in_list.
DEFAULT_MODELS: tuple[str, ...] = ("sd_xl_base_1.0.safetensors", "v1-5-pruned-emaonly.safetensors")
DEFAULT_STEP_SECONDS = 0.05


def default_output_dir() -> Path:
    return Path(tempfile.gettempdir()) / "comfyui-simulator" / "output"


@dataclass(frozen=True)
class SimulatorOptions:
    host: str = "127.0.0.1"
    port: int = 8188
    output_dir: Path = field(default_factory=default_output_dir)
    models: tuple[str, ...] = DEFAULT_MODELS
    step_seconds: float = DEFAULT_STEP_SECONDS
    previews: bool = True
    vram_total_gb: float = 24.0
    log_level: str = "INFO"
    record_sends: bool = False

    def __post_init__(self) -> None:
        # Path checks (saving, /view) compare absolute paths, as ComfyUI's folder_paths does.
        object.__setattr__(self, "output_dir", Path(self.output_dir).resolve())

    @property
    def input_dir(self) -> Path:
        # ComfyUI keeps input/, output/ and temp/ side by side.
        return self.output_dir.parent / "input"

    @property
    def temp_dir(self) -> Path:
        return self.output_dir.parent / "temp"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=SimulatorOptions.host, help="address to listen on")
    parser.add_argument("--port", type=int, default=SimulatorOptions.port, help="port to listen on")
    parser.add_argument(
        "--output-dir",
        default=None,
        help=f"where SaveImage writes files (default {default_output_dir()})",
    )
    parser.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help="comma-separated checkpoint names CheckpointLoaderSimple accepts ('' for none)",
    )
    parser.add_argument(
        "--step-seconds",
        type=float,
        default=DEFAULT_STEP_SECONDS,
        help="duration of one KSampler step",
    )
    parser.add_argument(
        "--preview-method",
        choices=("auto", "none"),
        default="auto",
        help="'none' stops KSampler sending preview frames, like ComfyUI's --preview-method none",
    )
    parser.add_argument("--vram-total-gb", type=float, default=SimulatorOptions.vram_total_gb)
    parser.add_argument("--log-level", default=SimulatorOptions.log_level)
    parser.add_argument(
        "--record-sends",
        action="store_true",
        help="keep when each `progress` message was written to a socket, at GET /sim/sent (for latency "
        "benchmarks; ComfyUI's messages carry no timestamp). Grows ~100 entries a second while a node reports",
    )


def options_from_arguments(arguments: Mapping[str, Any]) -> SimulatorOptions:
    """Build options from parsed arguments (argparse vars() or Django's options dict)."""
    output_dir = arguments.get("output_dir")
    models = arguments.get("models")
    return SimulatorOptions(
        host=arguments.get("host") or SimulatorOptions.host,
        port=int(arguments.get("port") or SimulatorOptions.port),
        output_dir=Path(output_dir) if output_dir else default_output_dir(),
        models=DEFAULT_MODELS if models is None else tuple(m.strip() for m in models.split(",") if m.strip()),
        step_seconds=float(arguments.get("step_seconds", DEFAULT_STEP_SECONDS)),
        previews=arguments.get("preview_method", "auto") != "none",
        vram_total_gb=float(arguments.get("vram_total_gb", SimulatorOptions.vram_total_gb)),
        log_level=str(arguments.get("log_level") or SimulatorOptions.log_level),
        record_sends=bool(arguments.get("record_sends", False)),
    )
