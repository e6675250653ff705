"""`manage.py run_system` brings the whole system up and takes every process down with it.

Runs the real command as a person would: simulator, uvicorn (two web processes), Celery workers and beat, on the real
Redis and a throw-away SQLite database. Linux only (it reads the process tree from /proc).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devtools.processes import Process, ProcessFailed, free_ports, port_open, url_status

STARTUP_SECONDS = 120.0

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc"),
]


@dataclass
class RunningSystem:
    command: Process
    web_port: int
    sim_port: int
    children: set[int] = field(default_factory=set)  # every process under run_system once it is up

    @property
    def process(self) -> subprocess.Popen[bytes]:
        assert self.command.popen is not None
        return self.command.popen

    def log(self) -> str:
        return self.command.output()


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) for every live process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        # The command name may hold spaces and parentheses: the fields start after the last ')'.
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        table[int(entry.name)] = (int(ppid), state)
    return table


def descendants(root: int) -> set[int]:
    table = process_table()
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, (ppid, _) in table.items() if ppid in frontier} - found
        found |= frontier
    return found


def still_running(pids: set[int]) -> set[int]:
    table = process_table()
    return {pid for pid in pids if pid in table and table[pid][1] != "Z"}


def command_line(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def wait_until_up(system: RunningSystem) -> None:
    web = f"http://127.0.0.1:{system.web_port}/api/jobs/"
    sim = f"http://127.0.0.1:{system.sim_port}/system_stats"
    try:
        system.command.wait_until(
            lambda: (
                url_status(web) in {401, 403}
                and url_status(sim) == 200
                and "[run_system] everything is up" in system.log()
            ),
            timeout=STARTUP_SECONDS,
            what="the whole system up",
        )
    except ProcessFailed as failure:
        pytest.fail(str(failure)[-5000:])


@pytest.fixture
def running_system(tmp_path: Path) -> Iterator[RunningSystem]:
    env = {key: value for key, value in os.environ.items() if key not in {"COMFYUI_URL", "COMFYUI_BACKENDS"}}
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        REDIS_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15"),
        MEDIA_ROOT=str(tmp_path / "media"),
        PYTHONUNBUFFERED="1",
    )
    web_port, sim_port = free_ports(2)
    argv = [sys.executable, "manage.py", "run_system", "--port", str(web_port), "--sim-port", str(sim_port)]
    command = Process(argv, env=env, log_path=tmp_path / "run_system.log", name="run_system")
    system = RunningSystem(command.start(), web_port, sim_port)
    try:
        wait_until_up(system)
        system.children = descendants(system.process.pid)
        yield system
    finally:
        # Whatever the test found, leave nothing of ours running: the command and all it started.
        ours = system.children | descendants(system.process.pid)
        command.kill()
        for pid in still_running(ours):
            os.kill(pid, signal.SIGKILL)


def test_sigterm_stops_every_process_it_started(running_system: RunningSystem) -> None:
    system = running_system
    commands = " | ".join(command_line(pid) for pid in system.children)
    for expected in ("devtools.simulator", "uvicorn", "--workers 2", "-Q gpu.default", "-Q default", " beat "):
        assert expected in commands, f"{expected!r} not among the started processes: {commands}"

    system.process.send_signal(signal.SIGTERM)
    exit_code = system.process.wait(timeout=60)

    log = system.log()
    assert exit_code == 0, log[-5000:]
    assert "[web] " in log and "[gpu-default] " in log and "[comfyui-sim] " in log
    assert "[run_system] stopped" in log
    assert still_running(system.children) == set(), "processes outlived run_system"
    assert not port_open(system.web_port) and not port_open(system.sim_port)


def test_a_child_that_dies_takes_the_system_down_with_an_error(running_system: RunningSystem) -> None:
    system = running_system
    beat = next(pid for pid in system.children if " beat " in command_line(pid))

    os.kill(beat, signal.SIGKILL)
    exit_code = system.process.wait(timeout=60)

    log = system.log()
    assert exit_code != 0
    assert "beat exited unexpectedly" in log, log[-5000:]
    assert still_running(system.children) == set(), "processes outlived run_system"
    assert not port_open(system.web_port) and not port_open(system.sim_port)
