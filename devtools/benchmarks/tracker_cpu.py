"""What following a job costs the tracker in CPU per ComfyUI message: a benchmark that prints a table.

    .venv/bin/python -m devtools.benchmarks.tracker_cpu --seconds 10 --runs 3 [--profile]

Each run tracks one job with the real tracker (jobs.tracking.job_track, in this process, as a GPU
worker runs it) against a simulator process whose TestSleep node reports progress about every
10 ms, each time as a `progress_state` and a `progress` text frame: ComfyUI's ~200 messages a second,
as real websocket frames over loopback. Its database writes go to PostgreSQL (a database created and
dropped here; --database-url sqlite for a temporary SQLite file, whose writes then cost this
process too) and its broadcasts to the channel layer of the settings, under a private prefix.

Measured: this process's CPU (time.process_time: every thread, the channel layer's included) and
the frames received, from the first to the last frame received while the sampling node runs, so
the job's fixed costs (claim, submit, outputs, the end) stay out. CPU per message is the quotient;
"% of a core at 200 msg/s" is what that costs at ComfyUI's rate. `--profile` adds cProfile's top 15
functions by their own CPU time over the same window (the tracker's thread only; the profiler slows it, so its run is
not counted in the table).

Goal (issue 12, goal 5): at most 2 % of a core per job at 200 ComfyUI messages a second.
The machine is shared: the notes give its load while the runs went on.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import random
import secrets
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

from devtools.benchmarks.progress_latency import bench_database, machine_busy_seconds
from devtools.simulator_process import SimulatorProcess

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/anime_bench_tracker_cpu"
GOAL_CORE_PERCENT = 2.0
COMFYUI_RATE = 200  # messages a second: a `progress_state` and a `progress` every 10 ms
SAMPLING_NODE = "2"

if TYPE_CHECKING:
    from jobs.tracking.session import ComfySession


@dataclass(frozen=True)
class Reading:
    at: float
    cpu: float
    thread_cpu: float
    machine: float
    frames: int
    decoded: int
    writes: int
    broadcasts: int


@dataclass
class Window:
    """Readings at the first and the last frame received while the sampling node ran."""

    first: Reading | None = None
    last: Reading | None = None
    closed: bool = False
    decoded: int = 0  # messages the session handed to the tracker (decoded, applied)

    def extend(self, session: ComfySession) -> None:
        reading = Reading(
            at=time.monotonic(),
            cpu=time.process_time(),
            thread_cpu=time.thread_time(),
            machine=machine_busy_seconds() if self.first is None else 0.0,
            frames=session.messages,
            decoded=self.decoded,
            writes=session.coalescer.db_writes,
            broadcasts=session.coalescer.broadcasts,
        )
        if self.first is None:
            self.first = reading
        self.last = reading

    def close(self) -> None:
        # The machine's busy time only at the ends: /proc/stat is read twice, not per frame.
        if self.last is not None:
            self.last = replace(self.last, machine=machine_busy_seconds())
        self.closed = True


@dataclass
class RunResult:
    cpu_seconds: float
    thread_cpu_seconds: float
    frames: int
    decoded: int
    wall_seconds: float
    machine_cores: float
    writes: int
    broadcasts: int
    status: str

    @property
    def ms_per_message(self) -> float:
        return self.cpu_seconds / self.frames * 1000

    @property
    def thread_share(self) -> float:
        return self.thread_cpu_seconds / self.cpu_seconds

    @property
    def core_percent_at_rate(self) -> float:
        return self.cpu_seconds / self.frames * COMFYUI_RATE * 100

    @property
    def rate(self) -> float:
        return self.frames / self.wall_seconds


def sleep_workflow(seconds: float) -> dict[str, Any]:
    # A colour of its own: the simulator, like ComfyUI, would serve a repeated prompt from its cache.
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": random.randrange(1 << 24)},
        },
        SAMPLING_NODE: {"class_type": "TestSleep", "inputs": {"value": ["1", 0], "seconds": seconds}},
        "3": {"class_type": "SaveImage", "inputs": {"images": [SAMPLING_NODE, 0], "filename_prefix": "bench"}},
    }


@contextmanager
def measured_window(window: Window, profiler: cProfile.Profile | None) -> Iterator[None]:
    """Watch every frame the tracker's session receives; the window is the sampling node's run."""
    from jobs.tracking.session import ComfySession

    real_receive = ComfySession.receive

    def receive(session: ComfySession, timeout: float) -> Any:
        message = real_receive(session, timeout)
        window.decoded += message is not None
        sampling = session.coalescer.progress.current_node == SAMPLING_NODE
        if sampling and not window.closed:
            if profiler is not None and window.first is None:
                profiler.enable()
            window.extend(session)
        elif window.first is not None and not window.closed:
            if profiler is not None:
                profiler.disable()
            window.close()
        return message

    with mock.patch.object(ComfySession, "receive", receive):
        yield


def run_job(seconds: float, profiler: cProfile.Profile | None = None) -> RunResult:
    from jobs import tracking
    from jobs.models import Job

    job = Job.objects.create(id=uuid.uuid4(), backend="default", job_type="image", workflow=sleep_workflow(seconds))
    window = Window()
    with measured_window(window, profiler):
        tracking.job_track(str(job.id))
    job.refresh_from_db()
    first, last = window.first, window.last
    if first is None or last is None or last.frames == first.frames:
        raise RuntimeError(f"the tracker never saw node {SAMPLING_NODE} run (job {job.status})")
    wall = last.at - first.at
    return RunResult(
        cpu_seconds=last.cpu - first.cpu,
        thread_cpu_seconds=last.thread_cpu - first.thread_cpu,
        frames=last.frames - first.frames,
        decoded=last.decoded - first.decoded,
        wall_seconds=wall,
        machine_cores=(last.machine - first.machine) / wall,
        writes=last.writes - first.writes,
        broadcasts=last.broadcasts - first.broadcasts,
        status=job.status,
    )


def warm_up() -> None:
    """One short job, not measured: imports, the node catalog, the channel layer's connection. (A
    busy machine may stall it past its sampling node, which only a measured run must see.)"""
    from jobs import tracking
    from jobs.models import Job

    job = Job.objects.create(id=uuid.uuid4(), backend="default", job_type="image", workflow=sleep_workflow(1.0))
    tracking.job_track(str(job.id))


def profile_report(profiler: cProfile.Profile) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(15)
    return out.getvalue()


def setup_django(database_url: str) -> None:
    prefix = f"bench-tracker-cpu-{os.getpid()}-"
    os.environ.update(
        DATABASE_URL=database_url,
        CELERY_KEY_PREFIX=prefix,
        CHANNEL_LAYER_PREFIX=f"{prefix}asgi",
        DEBUG="0",  # as deployed: DEBUG keeps every query in memory
        LOG_LEVEL="WARNING",
    )
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(32))  # DEBUG off needs a key of its own
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "anime_production.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.benchmarks.tracker_cpu", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the sampling node runs")
    parser.add_argument("--runs", type=int, default=3, help="jobs measured, one after the other")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="PostgreSQL URL, or 'sqlite'")
    parser.add_argument("--profile", action="store_true", help="one more run under cProfile: its top 15")
    args = parser.parse_args(argv)
    work_dir = Path(tempfile.mkdtemp(prefix="bench-tracker-cpu-"))
    try:
        with bench_database(args.database_url, work_dir, keep=False) as database_url:
            setup_django(database_url)
            try:
                results, profile = measure(args, work_dir)
            finally:
                close_connections()
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    report(results, profile)


def close_connections() -> None:
    from django.db import connections

    from jobs.refresh_ahead import refresher_stop

    # An open one would keep the database from being dropped: this thread's, and the refresher's
    # (after a minute the ETA's history is read again on a thread of its own: jobs.refresh_ahead).
    refresher_stop()
    connections.close_all()


def measure(args: argparse.Namespace, work_dir: Path) -> tuple[list[RunResult], str | None]:
    from django.conf import settings

    with SimulatorProcess(output_dir=work_dir / "output", extra_args=["--log-level", "WARNING"]) as sim:
        settings.COMFYUI_BACKENDS = {"default": sim.url}
        settings.MEDIA_ROOT = str(work_dir / "media")
        warm_up()
        results = [run_job(args.seconds) for _ in range(args.runs)]
        profile = None
        if args.profile:
            profiler = cProfile.Profile(time.thread_time)
            run_job(args.seconds, profiler)
            profile = profile_report(profiler)
    return results, profile


def report(results: list[RunResult], profile: str | None) -> None:
    from django.conf import settings

    engine, layer = str(settings.DATABASES["default"]["ENGINE"]), str(settings.CHANNEL_LAYERS["default"]["BACKEND"])
    print(
        f"database {engine.rsplit('.', 1)[-1]}, channel layer {layer.rsplit('.', 1)[-1]}, TRACKER_DB_INTERVAL="
        f"{settings.TRACKER_DB_INTERVAL}, TRACKER_BROADCAST_INTERVAL={settings.TRACKER_BROADCAST_INTERVAL}"
    )
    header = (
        f"{'run':>3} | {'frames':>6} | {'msg/s':>6} | {'decoded/s':>9} | {'CPU ms/msg':>10} | {'tracker thread':>14} | "
        f"{'% core at 200 msg/s':>19} | "
        f"{'writes/s':>8} | {'broadcasts/s':>12} | {'machine cores busy':>18} | status"
    )
    print(header)
    for number, run in enumerate(results, start=1):
        print(
            f"{number:>3} | {run.frames:>6} | {run.rate:>6.0f} | {run.decoded / run.wall_seconds:>9.1f} | "
            f"{run.ms_per_message:>10.4f} | "
            f"{run.thread_share:>14.0%} | "
            f"{run.core_percent_at_rate:>19.2f} | {run.writes / run.wall_seconds:>8.2f} | "
            f"{run.broadcasts / run.wall_seconds:>12.2f} | {run.machine_cores:>18.2f} | {run.status}"
        )
    median: Callable[[Callable[[RunResult], float]], float] = lambda f: statistics.median(f(r) for r in results)  # noqa: E731
    print(
        f"median: {median(lambda r: r.ms_per_message):.4f} ms of CPU per message, "
        f"{median(lambda r: r.core_percent_at_rate):.2f} % of a core per job at {COMFYUI_RATE} msg/s "
        f"(goal <= {GOAL_CORE_PERCENT:g} %); "
        f"the least disturbed run {min(r.core_percent_at_rate for r in results):.2f} %; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    )
    print("decoded/s: messages the session decoded and handed to the tracker, per second (the rest never were)")
    print(
        "tracker thread: the share of that CPU spent in the thread that reads ComfyUI (the rest: other threads, "
        "such as the channel layer's loop when broadcasts go through it, on a layer other than pub/sub)"
    )
    print("writes/s and broadcasts/s: the tracker's own tally over the same window (goal 6: <= 2 and <= 10)")
    if profile:
        print("\ncProfile, the tracker's thread over the sampling window (sorted by own time):")
        print(profile)


if __name__ == "__main__":
    main()
