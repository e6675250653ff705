"""The simulator as a process, as the integration tier and `make run` start it: its package stays
free of Django, it stops gracefully and serves again, and its helper copes with a taken port."""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import Any

import pytest
import requests

from devtools.simulator_process import REPO_ROOT, PortTakenError, SimulatorProcess


def test_simulator_package_imports_no_django() -> None:
    code = (
        "import sys, devtools.simulator, devtools.simulator.__main__;"
        "leaked = [m for m in sys.modules if m == 'django' or m.startswith('django.')];"
        "assert not leaked, leaked"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_stop_is_graceful_and_start_serves_again(comfyui_sim: SimulatorProcess) -> None:
    comfyui_sim.stop()
    assert not comfyui_sim.is_running()
    with pytest.raises(requests.ConnectionError):
        requests.get(comfyui_sim.url + "/prompt", timeout=2)
    comfyui_sim.start()
    assert requests.get(comfyui_sim.url + "/prompt", timeout=2).json() == {"exec_info": {"queue_remaining": 0}}


def test_process_helper_moves_off_a_port_taken_before_first_start(tmp_path: Any) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        sim = SimulatorProcess(output_dir=tmp_path / "output")
        sim.port = taken
        sim.start()
        try:
            assert sim.port != taken
            assert requests.get(sim.url + "/prompt", timeout=5).status_code == 200
        finally:
            sim.stop()
        pinned = SimulatorProcess(port=taken, output_dir=tmp_path / "pinned")
        with pytest.raises(PortTakenError):
            pinned.start()
