"""The integration tier: real Redis (this run's own keys), the real database, real processes.

The system's parts (the simulator, a GPU worker, daphne) are fixtures of tests/system.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.simulator_process import SimulatorProcess


@pytest.fixture(autouse=True)
def _redis_of_this_run(redis_of_this_run: None) -> None:
    """Every test here may reach Redis, directly or through a process it starts."""


@pytest.fixture
def comfyui_sim(tmp_path: Path) -> Iterator[SimulatorProcess]:
    """A fresh simulator process for one test (own port, own output dir, empty queue and history)."""
    sim = SimulatorProcess(output_dir=tmp_path / "comfyui" / "output")
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()
