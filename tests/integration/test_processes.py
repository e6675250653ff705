"""The process helper every integration fixture relies on: nothing it started outlives a stop, and
a process that fails to come up says why at once."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from devtools.processes import Process, ProcessFailed, free_port


def python(code: str, tmp_path: Path, name: str = "child") -> Process:
    return Process([sys.executable, "-c", code], log_path=tmp_path / f"{name}.log", name=name)


def group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs (zombies waiting to be reaped do not count)."""
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, group = stat_path.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue  # gone while we looked
        if int(group) == pgid and state != "Z":
            return True
    return False


def test_stop_ends_the_process_and_everything_it_started(tmp_path: Path) -> None:
    parent = python(
        "import subprocess, sys, time;"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        "print('started a child', flush=True); time.sleep(60)",
        tmp_path,
    )
    parent.start().wait_for_line("started a child", timeout=20)
    pgid = parent.pid
    assert pgid is not None and group_alive(pgid)

    parent.stop(grace=5)

    assert not parent.alive()
    assert not group_alive(pgid), "a process the stopped one started is still running"


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    stubborn = python(
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)",
        tmp_path,
    )
    stubborn.start().wait_for_line("up", timeout=20)
    started = time.monotonic()

    code = stubborn.stop(grace=0.5)

    assert code == -9
    assert time.monotonic() - started < 5


def test_a_process_that_exits_while_starting_fails_at_once_with_its_output(tmp_path: Path) -> None:
    broken = python("print('settings are wrong: no SECRET_KEY'); raise SystemExit(3)", tmp_path, name="web")
    started = time.monotonic()
    with pytest.raises(ProcessFailed) as failure:
        broken.start().wait_for_url(f"http://127.0.0.1:{free_port()}/", timeout=30)
    assert time.monotonic() - started < 10, "waited for the timeout instead of noticing the exit"
    assert "web exited (3)" in str(failure.value)
    assert "settings are wrong: no SECRET_KEY" in str(failure.value)


def test_a_process_that_never_gets_ready_fails_after_the_timeout_with_its_output(tmp_path: Path) -> None:
    silent = python("import time; print('still loading', flush=True); time.sleep(60)", tmp_path, name="worker")
    with pytest.raises(ProcessFailed) as failure:
        silent.start().wait_for_line(" ready.", timeout=1)
    silent.stop(grace=1)
    assert "worker not ready after 1 s" in str(failure.value)
    assert "still loading" in str(failure.value)
    assert not silent.alive()


def test_output_is_that_of_the_current_start_only(tmp_path: Path) -> None:
    process = python("import sys; print(sys.argv)", tmp_path)
    process.argv.append("first")
    process.start().wait(10)
    process.argv[-1] = "second"
    process.start().wait(10)
    assert "second" in process.output() and "first" not in process.output()
    assert "first" in process.full_output()
