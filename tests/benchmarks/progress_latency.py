"""How late, and at what cost, a browser sees ComfyUI's progress: a benchmark that prints a table.

    .venv/bin/python -m tests.benchmarks.progress_latency --jobs 1,10,50

For each concurrency N it runs N ComfyUI backends (simulator processes started with
--record-sends), each running one job of ~15 s whose TestSleep node reports progress at ComfyUI's
rate (about 100 `progress` messages a second), in two phases:

- floor: N clients connected straight to the simulators' websockets, each submitting its own
  prompt: the delay from the simulator writing a `progress` message to the client reading it;
- through ASGI: N GPU workers as production runs them (`celery worker -Q gpu.bI --concurrency 1`,
  one per backend, each tracking its job with jobs.tracking.job_track), daphne serving
  anime_production.asgi, and one browser-like websocket client per job on ws/jobs/<id>/?token=.
  Each update a client receives is matched, by (prompt_id, node, step value), to the simulator's
  send time of that `progress` message (GET /sim/sent): that is the delay a person watching sees.

Rates are per job and per second of the job's RUNNING time (started_at..finished_at): database
writes and broadcasts as the tracker counts them (its closing log line "N ComfyUI messages,
M database writes, K broadcasts"), and the updates a subscriber actually received. CPU is the
tracking workers' (pool processes included, from /proc) over the window in which all N jobs run,
per job, in % of one core. Everything runs on this machine and shares its cores: the simulators
(which stand in for GPU machines), Redis, PostgreSQL, daphne, the workers and these clients.

Targets (issue "Progress that tells the truth"): at 10 concurrent jobs, p99 at most 25 ms above
the floor; at most 2 database writes and 10 broadcasts per job per second while a job runs.

Isolation: a database of its own (created, migrated and dropped here; --database-url sqlite for a
temporary SQLite file), and private Celery / channel-layer key prefixes on the shared Redis.
`--layer core` or `--layer pubsub` overrides the channel layer of the settings (through
tests/benchmarks/layer_settings.py) to compare them; the default is whatever settings.py chooses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp

from tests.simulator_process import REPO_ROOT, SimulatorProcess, free_port

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/anime_bench_latency"
LAYERS = {
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
    "core": "channels_redis.core.RedisChannelLayer",
}
ORIGIN = "http://localhost:8000"  # must name a host in ALLOWED_HOSTS (AllowedHostsOriginValidator)
TRACKER_LINE = re.compile(r"job ([0-9a-f-]{36}): (\d+) ComfyUI messages, (\d+) database writes, (\d+) broadcasts")
CPU_SAMPLE_SECONDS = 0.25
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
READY_TIMEOUT = 180.0


# --- processes ----------------------------------------------------------------------------------


def group_cpu_seconds(groups: Sequence[int]) -> dict[int, float]:
    """User+system CPU of every live process in each process group (a worker and its pool child)."""
    wanted = set(groups)
    totals = dict.fromkeys(wanted, 0.0)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        group = int(fields[2])
        if group in wanted:
            totals[group] += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return totals


class Child:
    """A subprocess in a session of its own (so its pool processes can be stopped with it)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path, ready_line: str) -> None:
        self.name = name
        self.log_path = log_path
        self.ready_line = ready_line
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def is_ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited:\n{self.log()[-3000:]}")
        return self.ready_line in self.log()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def wait_ready(children: Sequence[Child]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    waiting = list(children)
    while waiting:
        waiting = [child for child in waiting if not child.is_ready()]
        if waiting and time.monotonic() > deadline:
            raise RuntimeError(f"not ready in {READY_TIMEOUT:.0f}s: {[c.name for c in waiting]}")
        time.sleep(0.2)


def gpu_worker(name: str, env: dict[str, str], log_dir: Path) -> Child:
    """One GPU worker as run_system starts it: its backend's queue, one job at a time."""
    argv = [
        sys.executable, "-m", "celery", "-A", "anime_production", "worker", "-Q", f"gpu.{name}",
        "--concurrency", "1", "--prefetch-multiplier", "1", "-n", f"bench-{name}-{os.getpid()}@%h",
        "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    return Child(f"worker {name}", argv, env, log_dir / f"worker-{name}.log", " ready.")


def daphne(port: int, env: dict[str, str], log_dir: Path) -> Child:
    argv = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "anime_production.asgi:application"]
    return Child("daphne", argv, env, log_dir / "daphne.log", "Listening on TCP address")


class CpuSampler:
    """CPU seconds of named process groups, sampled in the background, read back at any instant."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.samples: list[tuple[float, dict[str, float]]] = []

    def sample(self) -> None:
        per_group = group_cpu_seconds([g for members in self.groups.values() for g in members])
        totals = {name: sum(per_group[g] for g in members) for name, members in self.groups.items()}
        totals["self"] = time.process_time()
        self.samples.append((time.time(), totals))

    async def run(self) -> None:
        while True:
            await asyncio.to_thread(self.sample)
            await asyncio.sleep(CPU_SAMPLE_SECONDS)

    def at(self, name: str, when: float) -> float:
        """Linear interpolation between the samples around `when`."""
        previous = self.samples[0]
        for sample in self.samples:
            if sample[0] >= when:
                t0, c0 = previous[0], previous[1][name]
                t1, c1 = sample[0], sample[1][name]
                return c1 if t1 == t0 else c0 + (c1 - c0) * (when - t0) / (t1 - t0)
            previous = sample
        return self.samples[-1][1][name]

    def core_share(self, name: str, start: float, end: float) -> float:
        """Cores used on average by group `name` between two instants."""
        return (self.at(name, end) - self.at(name, start)) / (end - start)


# --- what clients see ---------------------------------------------------------------------------


def sleep_workflow(seconds: float, colour: int) -> dict[str, Any]:
    # The colour makes every prompt new: ComfyUI (and the simulator) would serve a repeat from cache.
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": colour}},
        "2": {"class_type": "TestSleep", "inputs": {"value": ["1", 0], "seconds": seconds}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "bench"}},
    }


_colours = iter(range(1, 0xFFFFFF))


async def sent_times(session: aiohttp.ClientSession, sim: SimulatorProcess, prompt_id: str) -> dict[tuple[str, float], dict[str, float]]:
    """(node, value) -> {sid: sent_at} of every `progress` message of the prompt."""
    async with session.get(sim.url + "/sim/sent", params={"prompt_id": prompt_id}) as response:
        response.raise_for_status()
        sent: dict[tuple[str, float], dict[str, float]] = {}
        for entry in await response.json():
            sent.setdefault((str(entry["node"]), float(entry["value"])), {})[entry["sid"]] = entry["sent_at"]
        return sent


async def floor_client(session: aiohttp.ClientSession, sim: SimulatorProcess, seconds: float) -> tuple[list[float], int]:
    """Submit a prompt on a socket of our own; delays (s) of its progress messages, and their count."""
    client_id = f"floor-{uuid.uuid4().hex}"
    prompt_id = str(uuid.uuid4())
    received: dict[tuple[str, float], float] = {}
    async with session.ws_connect(f"{sim.ws_url}?clientId={client_id}", max_msg_size=0) as ws:
        await ws.receive()  # our `status`, with our sid
        body = {"prompt": sleep_workflow(seconds, next(_colours)), "client_id": client_id, "prompt_id": prompt_id}
        async with session.post(sim.url + "/prompt", json=body) as response:
            response.raise_for_status()
        async for message in ws:
            now = time.time()
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            # Parse only what we match on: progress_state is as frequent and much larger.
            if message.data.startswith('{"type": "progress", '):
                data = json.loads(message.data)["data"]
                received[(str(data["node"]), float(data["value"]))] = now
            elif message.data.startswith('{"type": "executing", '):
                data = json.loads(message.data)["data"]
                if data.get("node") is None and data.get("prompt_id") == prompt_id:
                    break
    sent = await sent_times(session, sim, prompt_id)
    delays = [at - sent[key][client_id] for key, at in received.items() if client_id in sent.get(key, {})]
    return delays, len(received)


@dataclass
class Subscription:
    job_id: str
    updates: list[tuple[float, dict[str, Any]]] = field(default_factory=list)


FINAL = {"completed", "failed", "cancelled"}


async def subscribe(session: aiohttp.ClientSession, url: str, subscription: Subscription) -> Subscription:
    """A browser on ws/jobs/<id>/: every state update it receives, with when, until the job ends."""
    async with session.ws_connect(url, headers={"Origin": ORIGIN}, max_msg_size=0) as ws:
        async for message in ws:
            now = time.time()
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            job = data.get("job")
            if job is None:
                continue
            if data["type"] == "update":
                subscription.updates.append((now, job))
            if job["status"] in FINAL:
                break
    return subscription


# --- statistics ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest rank: the smallest value with at least `fraction` of the values at or below it."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1]


def ms(value: float) -> str:
    return f"{value * 1000:.1f}"


@dataclass
class FloorResult:
    delays: list[float]
    sims_cores: float
    client_cores: float


@dataclass
class JobResult:
    job_id: str
    prompt_id: str
    running_seconds: float
    started: float
    finished: float
    delays: list[float]
    unmatched: int
    received_while_running: int
    tracker: tuple[int, int, int] | None  # messages, database writes, broadcasts


@dataclass
class AsgiResult:
    jobs: list[JobResult]
    window: tuple[float, float]
    worker_cores: float
    daphne_cores: float
    sims_cores: float
    client_cores: float
    pg_updates_before: int | None

    @property
    def delays(self) -> list[float]:
        return [d for job in self.jobs for d in job.delays]

    def per_job_second(self, count: Callable[[JobResult], float]) -> float:
        return statistics.mean(count(job) / job.running_seconds for job in self.jobs)


# --- the benchmark ------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, sims: list[SimulatorProcess], env: dict[str, str], log_dir: Path) -> None:
        self.args = args
        self.sims = sims
        self.env = env
        self.log_dir = log_dir
        self.daphne_port = free_port()
        self.token = ""
        self.user: Any = None

    def setup_django(self) -> None:
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from django.core.management import call_command
        from rest_framework.authtoken.models import Token

        call_command("migrate", verbosity=0)
        self.user = get_user_model().objects.create_user(f"bench-{uuid.uuid4().hex[:8]}")
        self.token = Token.objects.create(user=self.user).key

    def create_job(self, index: int) -> tuple[str, str]:
        from jobs import services

        job = services.job_create(
            user=self.user,
            workflow=sleep_workflow(self.args.seconds, next(_colours)),
            job_type="other",
            backend=f"b{index + 1}",
        )
        return str(job.id), str(job.prompt_id)

    # --- floor ---

    async def floor(self, n: int) -> FloorResult:
        sims = self.sims[:n]
        sampler = CpuSampler({"sims": [s.pid for s in sims]})
        sampling = asyncio.create_task(sampler.run())
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            start = time.time()
            results = await asyncio.gather(*(floor_client(session, sim, self.args.seconds) for sim in sims))
            end = time.time()
        sampling.cancel()
        sampler.sample()
        delays = [d for found, _ in results for d in found]
        return FloorResult(delays, sampler.core_share("sims", start, end), sampler.core_share("self", start, end))

    # --- through the tracker, the layer and daphne ---

    async def through_asgi(self, n: int, workers: list[Child], web: Child) -> AsgiResult:
        sims = self.sims[:n]
        sampler = CpuSampler({"workers": [w.pid for w in workers], "daphne": [web.pid], "sims": [s.pid for s in sims]})
        sampling = asyncio.create_task(sampler.run())
        pg_before = await asyncio.to_thread(pg_job_updates)
        base = f"ws://127.0.0.1:{self.daphne_port}/ws/jobs"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            subscribers, prompts = [], {}
            for index in range(n):
                job_id, prompt_id = await asyncio.to_thread(self.create_job, index)
                prompts[job_id] = (prompt_id, sims[index])
                url = f"{base}/{job_id}/?token={self.token}"
                subscribers.append(asyncio.create_task(subscribe(session, url, Subscription(job_id))))
            done = await asyncio.wait_for(asyncio.gather(*subscribers), timeout=self.args.seconds * 3 + 120)
            sent = {job_id: await sent_times(session, sim, prompt_id) for job_id, (prompt_id, sim) in prompts.items()}
        sampling.cancel()
        sampler.sample()
        rows = await asyncio.to_thread(job_rows, list(prompts))
        tracker = await asyncio.to_thread(tracker_counts, workers, list(prompts))
        jobs = [job_result(sub, rows[sub.job_id], sent[sub.job_id], tracker.get(sub.job_id)) for sub in done]
        window = (max(j.started for j in jobs), min(j.finished for j in jobs))
        if window[1] - window[0] < 1.0:
            raise RuntimeError(f"the {n} jobs hardly ran at the same time (window {window[1] - window[0]:.1f}s)")
        return AsgiResult(
            jobs=jobs,
            window=window,
            worker_cores=sampler.core_share("workers", *window),
            daphne_cores=sampler.core_share("daphne", *window),
            sims_cores=sampler.core_share("sims", *window),
            client_cores=sampler.core_share("self", *window),
            pg_updates_before=pg_before,  # the difference is taken once the workers have stopped
        )


def job_rows(job_ids: list[str]) -> dict[str, dict[str, Any]]:
    from jobs.models import Job

    rows = Job.objects.filter(pk__in=job_ids).values("id", "prompt_id", "status", "started_at", "finished_at")
    return {str(row["id"]): row for row in rows}


def tracker_counts(workers: list[Child], job_ids: list[str]) -> dict[str, tuple[int, int, int]]:
    """The tracker's own tally, from the line it logs when it stops following a job."""
    deadline = time.monotonic() + 15
    while True:
        found = {}
        for worker in workers:
            for match in TRACKER_LINE.finditer(worker.log()):
                found[match[1]] = (int(match[2]), int(match[3]), int(match[4]))
        if set(job_ids) <= set(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def pg_job_updates() -> int | None:
    """Rows updated in jobs_job and inserted into the timeline so far (PostgreSQL's statistics)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute(
            "SELECT coalesce(sum(n_tup_upd), 0) FROM pg_stat_user_tables WHERE relname = 'jobs_job'"
        )
        return int(cursor.fetchone()[0])


def job_result(
    sub: Subscription,
    row: dict[str, Any],
    sent: dict[tuple[str, float], dict[str, float]],
    tracker: tuple[int, int, int] | None,
) -> JobResult:
    if row["status"] != "completed" or row["started_at"] is None:
        raise RuntimeError(f"job {sub.job_id} ended {row['status']}")
    started, finished = row["started_at"].timestamp(), row["finished_at"].timestamp()
    delays, unmatched, running = [], 0, 0
    for received_at, job in sub.updates:
        if job["status"] != "running":
            continue
        running += 1
        step, node = job.get("step"), job.get("current_node")
        if not step or not node:
            continue
        sent_at = sent.get((str(node["id"]), float(step["value"])), {}).get(f"tracker-{sub.job_id}")
        if sent_at is None:
            unmatched += 1
            continue
        delays.append(received_at - sent_at)
    return JobResult(
        job_id=sub.job_id,
        prompt_id=str(row["prompt_id"]),
        running_seconds=finished - started,
        started=started,
        finished=finished,
        delays=delays,
        unmatched=unmatched,
        received_while_running=running,
        tracker=tracker,
    )


# --- set-up -------------------------------------------------------------------------------------


@contextmanager
def bench_database(url: str, work_dir: Path, keep: bool) -> Iterator[str]:
    """A fresh database for the run: PostgreSQL (created and dropped here) or a temporary SQLite."""
    if url == "sqlite":
        yield f"sqlite:///{work_dir / 'bench.sqlite3'}"
        return
    import psycopg

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url
    finally:
        if not keep:
            from django.db import connections

            connections.close_all()
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def clear_redis_keys(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.delete(key)


def bench_environment(args: argparse.Namespace, sims: list[SimulatorProcess], database_url: str, work_dir: Path) -> dict[str, str]:
    prefix = f"bench-latency-{os.getpid()}-"
    env = {key: value for key, value in os.environ.items() if key != "COMFYUI_URL"}
    env.update(
        DATABASE_URL=database_url,
        COMFYUI_BACKENDS=",".join(f"b{i + 1}={sim.url}" for i, sim in enumerate(sims)),
        CELERY_KEY_PREFIX=prefix,
        CHANNEL_LAYER_PREFIX=f"{prefix}asgi",
        MEDIA_ROOT=str(work_dir / "media"),
        DEBUG="0",  # as deployed (docker/compose.yaml); DEBUG keeps every query in memory
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
        DJANGO_SETTINGS_MODULE="anime_production.settings",
    )
    if args.layer != "settings":
        env.update(DJANGO_SETTINGS_MODULE="tests.benchmarks.layer_settings", BENCH_CHANNEL_LAYER=LAYERS[args.layer])
    return env


# --- report -------------------------------------------------------------------------------------

HEADER = (
    f"{'jobs':>4} | {'floor p50/p99 ms':>16} | {'ASGI p50/p99 ms':>16} | {'p99 above floor':>15} | "
    f"{'DB writes/job/s':>15} | {'broadcasts/job/s':>16} | {'tracker CPU %/job':>17}"
)


def table_row(n: int, floor: FloorResult, asgi: AsgiResult) -> str:
    f50, f99 = percentile(floor.delays, 0.5), percentile(floor.delays, 0.99)
    a50, a99 = percentile(asgi.delays, 0.5), percentile(asgi.delays, 0.99)
    writes = asgi.per_job_second(lambda j: j.tracker[1]) if all(j.tracker for j in asgi.jobs) else float("nan")
    sent = asgi.per_job_second(lambda j: j.tracker[2]) if all(j.tracker for j in asgi.jobs) else float("nan")
    received = asgi.per_job_second(lambda j: j.received_while_running)
    cpu = asgi.worker_cores / n * 100
    return (
        f"{n:>4} | {ms(f50):>7} / {ms(f99):>6} | {ms(a50):>7} / {ms(a99):>6} | {ms(a99 - f99):>15} | "
        f"{writes:>15.2f} | {f'{sent:.2f} ({received:.2f} rcvd)':>16} | {cpu:>17.2f}"
    )


def details(n: int, floor: FloorResult, asgi: AsgiResult, pg_updates: int | None) -> str:
    window = asgi.window[1] - asgi.window[0]
    lines = [
        f"  N={n}: floor {len(floor.delays)} progress messages (max {ms(max(floor.delays))} ms), sims "
        f"{floor.sims_cores * 100:.0f}% of a core, these clients {floor.client_cores * 100:.0f}%",
        f"  N={n}: through ASGI {len(asgi.delays)} matched updates (max {ms(max(asgi.delays))} ms, "
        f"{sum(j.unmatched for j in asgi.jobs)} unmatched); all {n} running together for {window:.1f}s, meanwhile: "
        f"workers {asgi.worker_cores * 100:.0f}%, daphne {asgi.daphne_cores * 100:.0f}%, sims "
        f"{asgi.sims_cores * 100:.0f}%, these clients {asgi.client_cores * 100:.0f}% of a core",
    ]
    if pg_updates is not None:
        running = sum(j.running_seconds for j in asgi.jobs)
        lines.append(f"  N={n}: PostgreSQL: {pg_updates} jobs_job row updates = {pg_updates / running:.2f} per job-second")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.progress_latency", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", default="1,10,50", help="concurrencies to measure, comma-separated")
    parser.add_argument("--seconds", type=float, default=15.0, help="how long each job's TestSleep runs")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="PostgreSQL URL, or 'sqlite'")
    parser.add_argument("--layer", choices=("settings", *LAYERS), default="settings", help="channel layer")
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    args = parser.parse_args(argv)
    concurrencies = [int(n) for n in args.jobs.split(",")]

    work_dir = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    log_dir = work_dir / "logs"
    log_dir.mkdir()
    sims = [
        SimulatorProcess(output_dir=work_dir / f"sim{i + 1}" / "output", extra_args=["--record-sends", "--log-level", "WARNING"])
        for i in range(max(concurrencies))
    ]
    web: Child | None = None
    env: dict[str, str] = {}
    try:
        for sim in sims:
            sim.start()
        with bench_database(args.database_url, work_dir, args.keep) as database_url:
            env = bench_environment(args, sims, database_url, work_dir)
            os.environ.update(env)
            os.environ.pop("COMFYUI_URL", None)
            bench = Bench(args, sims, env, log_dir)
            bench.setup_django()
            from django.conf import settings

            web = daphne(bench.daphne_port, env, log_dir)
            wait_ready([web])
            print(f"channel layer {settings.CHANNEL_LAYERS['default']['BACKEND']}, database "
                  f"{settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}, jobs of {args.seconds:g}s, "
                  f"TRACKER_DB_INTERVAL={settings.TRACKER_DB_INTERVAL}, "
                  f"TRACKER_BROADCAST_INTERVAL={settings.TRACKER_BROADCAST_INTERVAL}, logs in {log_dir}", flush=True)
            rows, notes = [], []
            for n in concurrencies:
                floor = asyncio.run(bench.floor(n))
                workers = [gpu_worker(f"b{i + 1}", env, log_dir) for i in range(n)]
                try:
                    wait_ready(workers)
                    asgi = asyncio.run(bench.through_asgi(n, workers, web))
                finally:
                    for worker in workers:
                        worker.stop()
                pg_after = pg_job_updates()  # workers gone: their statistics are flushed
                pg_updates = None if pg_after is None else pg_after - asgi.pg_updates_before
                rows.append(table_row(n, floor, asgi))
                notes.append(details(n, floor, asgi, pg_updates))
                print(HEADER, *rows, *notes, sep="\n", flush=True)
                print(flush=True)
    finally:
        if web is not None:
            web.stop()
        for sim in sims:
            sim.stop()
        if env:
            clear_redis_keys(env.get("REDIS_URL", "redis://127.0.0.1:6379/0"), env["CELERY_KEY_PREFIX"])
        if not args.keep:
            subprocess.run(["rm", "-rf", str(work_dir)], check=False)


if __name__ == "__main__":
    main()
