"""Start and stop the processes the integration and browser tests run: one helper for all of them.

    worker = Process(["celery", ...], env=env, log_path=ARTIFACTS / "worker.log", name="gpu worker")
    worker.start().wait_for_line(" ready.")
    ...
    worker.stop()  # SIGTERM to its process group, SIGKILL after the grace period

Every process gets a session (and so a process group) of its own, so stopping it also stops what
it started (a Celery pool, daphne's workers). Its output goes to `log_path`; a wait that fails,
because the process exited or the time ran out, raises `ProcessFailed` with the end of that output,
and a test that fails while processes run gets the end of theirs in its report (tests/system.py).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import requests

REPO = Path(__file__).resolve().parents[1]
POLL_SECONDS = 0.05
OUTPUT_TAIL = 3000

# These are local servers: never through a proxy from the environment.
_LOCAL_HTTP = requests.Session()
_LOCAL_HTTP.trust_env = False


_started: list[Process] = []


def running_processes() -> list[Process]:
    """The processes this test process started that still run."""
    _started[:] = [process for process in _started if process.alive()]
    return list(_started)


class ProcessFailed(RuntimeError):
    """A process exited, or did not become ready in time; the message ends with its output."""


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    # All held open together, so the kernel cannot hand out the same port twice.
    probes = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for probe in probes:
            probe.bind((host, 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def url_status(url: str) -> int | None:
    """The status of a GET of `url`, None when nothing answers."""
    try:
        return _LOCAL_HTTP.get(url, timeout=2).status_code
    except requests.RequestException:
        return None


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((host, port)) == 0


class Process:
    """One command, started in a process group of its own, with its output in a log file."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path = REPO,
        name: str | None = None,
    ) -> None:
        self.argv = [str(arg) for arg in argv]
        self.log_path = log_path
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.name = name or Path(self.argv[0]).name
        self.popen: subprocess.Popen[bytes] | None = None
        self._log_start = 0  # where this start's output begins in the log file

    # --- starting and waiting ----------------------------------------------------------------

    def start(self) -> Process:
        if self.alive():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _started.append(self)
        return self

    def wait_until(self, ready: Callable[[], bool], *, timeout: float, what: str) -> Process:
        """Poll `ready` until it is true; fail at once if the process exits meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise ProcessFailed(self._failure(f"exited ({self.returncode}) before {what}"))
            if ready():
                return self
            if time.monotonic() > deadline:
                raise ProcessFailed(self._failure(f"not ready after {timeout:g} s: no {what}"))
            time.sleep(POLL_SECONDS)

    def wait_for_line(self, text: str, *, timeout: float = 60.0) -> Process:
        """Until `text` appears in what this start of the process has written."""
        return self.wait_until(lambda: text in self.output(), timeout=timeout, what=repr(text))

    def wait_for_url(self, url: str, *, timeout: float = 60.0, statuses: Sequence[int] = (200,)) -> Process:
        """Until an HTTP GET of `url` answers with one of `statuses`."""
        return self.wait_until(lambda: url_status(url) in statuses, timeout=timeout, what=f"answer from {url}")

    def wait_for_port(self, port: int, *, host: str = "127.0.0.1", timeout: float = 60.0) -> Process:
        return self.wait_until(lambda: port_open(port, host), timeout=timeout, what=f"listener on {host}:{port}")

    def wait(self, timeout: float) -> int:
        """Until the process exits by itself; its exit code."""
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.wait(timeout=timeout)

    # --- stopping ----------------------------------------------------------------------------

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM to the process group; SIGKILL to it after `grace` seconds. Returns the exit code.

        Whatever the leader did, what is left of its group is killed too (a Celery pool child whose
        parent was killed, say)."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.popen.wait(timeout=10)
        self._signal_group(signal.SIGKILL)
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL the whole group at once, as a crash or an OOM kill would: nothing is flushed."""
        if self.popen is None:
            return
        self._signal_group(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def _signal_group(self, signum: int) -> None:
        assert self.popen is not None
        try:
            os.killpg(self.popen.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass  # the group is gone already

    # --- state and output --------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def output(self) -> str:
        """What this start of the process has written so far (stdout and stderr)."""
        return self._read_log(self._log_start)

    def full_output(self) -> str:
        """Everything in the log file, earlier starts included."""
        return self._read_log(0)

    def _read_log(self, offset: int) -> str:
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def tail(self) -> str:
        return self.output()[-OUTPUT_TAIL:]

    def _failure(self, what: str) -> str:
        return f"{self.name} {what}; its output ({self.log_path}):\n{self.tail()}"

    def __enter__(self) -> Process:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
