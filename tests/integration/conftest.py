"""The integration tier: real Redis (this run's own keys), the real database, real processes.

The system's parts (the simulator, a GPU worker, daphne) are fixtures of tests/system.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError
from django.core.management.commands import flush
from django.db import OperationalError

from devtools.simulator_process import SimulatorProcess


@pytest.fixture(autouse=True)
def _redis_of_this_run(redis_of_this_run: None) -> None:
    """Every test here may reach Redis, directly or through a process it starts."""


@pytest.fixture(autouse=True, scope="session")
def _flush_again_after_a_deadlock() -> Iterator[None]:
    """A test's database is emptied (TRUNCATE) while the system's processes may still read it: an idle
    GPU worker taking work, beat's sweeps. PostgreSQL then may find a deadlock and cancel the
    TRUNCATE, which rolls back whole: emptying again is safe (seen once in CI, after a retry test)."""
    original = flush.Command.handle

    def handle(self: flush.Command, *args: Any, **options: Any) -> None:
        for attempt in range(3):
            try:
                return original(self, *args, **options)
            except CommandError as exc:
                if attempt == 2 or not isinstance(exc.__cause__, OperationalError):
                    raise
                time.sleep(0.5)

    flush.Command.handle = handle  # type: ignore[method-assign]
    yield
    flush.Command.handle = original  # type: ignore[method-assign]


@pytest.fixture
def comfyui_sim(tmp_path: Path) -> Iterator[SimulatorProcess]:
    """A fresh simulator process for one test (own port, own output dir, empty queue and history)."""
    sim = SimulatorProcess(output_dir=tmp_path / "comfyui" / "output")
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()
