"""Run the whole system in the foreground: (simulator,) web, one worker per GPU, default worker, webhooks
worker, beat.

Each child runs in its own process group, so a Ctrl-C in the terminal reaches only this command,
which then stops the children in order and in full (a Celery worker's pool processes included).
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from access.access_log import uvicorn_argv
from fleet.workers import default_worker_args, gpu_worker_args, webhook_worker_args

STARTUP_TIMEOUT = 90.0
# Readiness probes go to this machine: never through an http_proxy from the environment.
LOCAL_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Child:
    name: str
    argv: list[str]
    # How we know it is serving: an HTTP answer on ready_url, or a line of its output with ready_line.
    ready_url: str | None = None
    ready_line: str | None = None
    process: subprocess.Popen[bytes] | None = None
    ready: threading.Event = field(default_factory=threading.Event)

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()


def celery(*args: str) -> list[str]:
    # INFO, because that is where Celery says "ready." and what it received and finished.
    return [sys.executable, "-m", "celery", "-A", "anime_production", *args, "--loglevel", "INFO"]


def simulator_child(port: int, output_dir: Path) -> Child:
    argv = [
        sys.executable,
        "-m",
        "devtools.simulator",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--output-dir",
        str(output_dir),
    ]
    return Child("comfyui-sim", argv, ready_url=f"http://127.0.0.1:{port}/system_stats")


def metrics_dir_emptied(directory: Path) -> Path:
    """Where every child keeps its Prometheus counters (README "Metrics"), emptied: the files of the
    last run's processes would otherwise be summed into this run's, and its pids reused."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    return directory


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def system_children(
    host: str, port: int, web_workers: int, backends: dict[str, str], beat_schedule: Path
) -> list[Child]:
    children = [Child("web", uvicorn_argv(host, port, web_workers), ready_url=f"http://127.0.0.1:{port}/api/")]
    for name in backends:
        argv = celery(*gpu_worker_args(name))
        children.append(Child(f"gpu-{name}", argv, ready_line=" ready."))
    default_worker = celery(*default_worker_args())
    children.append(Child("default-worker", default_worker, ready_line=" ready."))
    webhooks = celery(*webhook_worker_args(settings.WEBHOOK_WORKER_CONCURRENCY))
    children.append(Child("webhooks-worker", webhooks, ready_line=" ready."))
    children.append(Child("beat", celery("beat", "-s", str(beat_schedule)), ready_line="beat: Starting"))
    return children


def simulator_wanted() -> bool:
    # Presence only: whether anyone configured a ComfyUI; the URLs themselves come from settings.
    return "COMFYUI_URL" not in os.environ and "COMFYUI_BACKENDS" not in os.environ


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def http_answers(url: str) -> bool:
    try:
        LOCAL_HTTP.open(url, timeout=2).close()
    except urllib.error.HTTPError:
        return True  # any status, 401 included, means the server is up
    except OSError:
        return False
    return True


class Command(BaseCommand):
    help = "Run the simulator (if no ComfyUI is configured), web, GPU workers, default and webhooks workers, beat."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--host",
            default="127.0.0.1",
            help="address the web server binds to (default loopback; 0.0.0.0 only with DEBUG off)",
        )
        parser.add_argument("--port", type=int, default=8000, help="web (HTTP + websockets) port")
        parser.add_argument(
            "--web-workers", type=int, default=2, help="web processes behind the port (uvicorn --workers; one per core)"
        )
        parser.add_argument("--sim-port", type=int, default=8188, help="ComfyUI simulator port")
        parser.add_argument(
            "--stop-timeout", type=float, default=15.0, help="seconds a child gets to exit after SIGTERM before SIGKILL"
        )

    def handle(
        self, *args: Any, host: str, port: int, web_workers: int, sim_port: int, stop_timeout: float, **options: Any
    ) -> None:
        if settings.DEBUG and not is_loopback(host):
            raise CommandError(
                f"refusing to serve on {host} with DEBUG on: DEBUG shows settings and tracebacks to anyone "
                "who can reach it. Set DEBUG=0 and a SECRET_KEY, or bind to 127.0.0.1."
            )
        self.host = host
        self.web_workers = web_workers
        self.output_lock = threading.Lock()
        self.stopping = threading.Event()
        self.children: list[Child] = []
        self.phases: list[list[Child]] = []  # started together, stopped together, last one first
        self.relays: list[threading.Thread] = []
        simulate = simulator_wanted()
        # Else another server (a ComfyUI already on 8188, say) answers the readiness probes for ours.
        for what, number in [("web", port)] + ([("simulator", sim_port)] if simulate else []):
            if port_in_use(number):
                raise CommandError(f"port {number} for the {what} is already in use (see --port, --sim-port)")
        call_command("migrate", interactive=False)
        # From here on a signal means "stop everything in order", not an exception mid-start.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: self.stopping.set())
        try:
            failure = self.run_children(port, sim_port, simulate)
            if failure:
                self.say(f"{failure}; stopping the rest", self.style.ERROR)
        finally:
            # Workers first and the simulator last, so no job in its warm shutdown loses its ComfyUI.
            for phase in reversed(self.phases):
                self.stop_children(phase, stop_timeout)
            for relay in self.relays:
                relay.join(timeout=2)  # let the children's last lines reach the terminal
        if failure:
            raise CommandError(failure)
        self.say("stopped")

    def run_children(self, port: int, sim_port: int, simulate: bool) -> str | None:
        """Start everything, then watch; returns why it stopped if that was not a signal."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        var = Path(settings.BASE_DIR) / "var"
        var.mkdir(exist_ok=True)
        metrics_dir = Path(env.get("PROMETHEUS_MULTIPROC_DIR") or var / "metrics")
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir_emptied(metrics_dir))
        backends = dict(settings.COMFYUI_BACKENDS)
        to_start: list[list[Child]] = []
        if simulate:
            # Then settings hold one backend, COMFYUI_URL's default, which becomes the simulator.
            env["COMFYUI_URL"] = f"http://127.0.0.1:{sim_port}"
            backends = {name: env["COMFYUI_URL"] for name in backends}
            to_start.append([simulator_child(sim_port, var / "comfyui-sim-output")])
        to_start.append(system_children(self.host, port, self.web_workers, backends, var / "celerybeat-schedule"))
        for phase in to_start:
            # The simulator answers before any worker starts, so no first task meets a dead backend.
            failure = self.start_and_wait(phase, env)
            if failure or self.stopping.is_set():
                return failure
        self.print_where(port, backends, simulate)
        return self.watch()

    def start_and_wait(self, children: list[Child], env: dict[str, str]) -> str | None:
        self.phases.append(children)
        for child in children:
            self.start(child, env)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not all(child.ready.is_set() for child in children):
            failure = self.exited_child()
            if failure or self.stopping.is_set():
                return failure
            if time.monotonic() > deadline:
                late = [child.name for child in children if not child.ready.is_set()]
                return f"not ready after {STARTUP_TIMEOUT:.0f} s: {', '.join(late)}"
            for child in children:
                if child.ready_url and not child.ready.is_set() and http_answers(child.ready_url):
                    child.ready.set()
            self.stopping.wait(0.3)
        return None

    def start(self, child: Child, env: dict[str, str]) -> None:
        self.say(f"starting {child.name}: {' '.join(child.argv)}")
        child.process = subprocess.Popen(
            child.argv,
            cwd=settings.BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if not (child.ready_url or child.ready_line):
            child.ready.set()
        self.children.append(child)
        relay = threading.Thread(target=self.relay_output, args=(child, child.process.stdout), daemon=True)
        relay.start()
        self.relays.append(relay)

    def relay_output(self, child: Child, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            if child.ready_line and child.ready_line in line:
                child.ready.set()
            with self.output_lock:
                self.stdout.write(f"[{child.name}] {line}")

    def watch(self) -> str | None:
        while not self.stopping.wait(0.5):
            failure = self.exited_child()
            if failure:
                return failure
        return None

    def exited_child(self) -> str | None:
        for child in self.children:
            code = child.exit_code()
            if code is not None:
                return f"{child.name} exited unexpectedly with code {code}"
        return None

    def stop_children(self, children: list[Child], timeout: float) -> None:
        children = [child for child in children if child.process is not None]
        running = [child for child in children if child.exit_code() is None]
        if running:
            self.say(f"stopping {', '.join(child.name for child in running)}")
        for child in running:
            signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in running:
            try:
                started(child).wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{child.name} did not stop in {timeout:.0f} s; killing it")
        # Also reaps what a child left behind in its group (a worker's pool processes, say).
        for child in children:
            signal_group(child, signal.SIGKILL)
            started(child).wait()

    def print_where(self, port: int, backends: dict[str, str], simulate: bool) -> None:
        web = f"http://127.0.0.1:{port}"
        comfyui = "\n".join(
            f"  ComfyUI {name}: {url}{' (simulator)' if simulate else ''}" for name, url in backends.items()
        )
        self.say(
            "everything is up\n"
            f"  Admin:    {web}/admin/  (dashboard: {web}/admin/dashboard/)\n"
            f"  API:      {web}/api/jobs/  (described at {web}/api/docs/)\n"
            f"  Live:     ws://127.0.0.1:{port}/ws/jobs/<job id>/\n"
            f"{comfyui}\n"
            "  First time? python manage.py createsuperuser, then python manage.py create_api_key <user>\n"
            "  Ctrl-C stops everything."
        )

    def say(self, message: str, style: Callable[[str], str] | None = None) -> None:
        with self.output_lock:
            self.stdout.write((style or self.style.SUCCESS)(f"[run_system] {message}"))


def started(child: Child) -> subprocess.Popen[bytes]:
    if child.process is None:
        raise RuntimeError(f"{child.name} was never started")
    return child.process


def signal_group(child: Child, signum: int) -> None:
    try:
        os.killpg(started(child).pid, signum)
    except ProcessLookupError:
        pass  # the whole group is already gone
