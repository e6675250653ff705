"""How late, and at what cost, a browser sees ComfyUI's progress: a benchmark that prints a table.

    .venv/bin/python -m devtools.benchmarks.progress_latency --jobs 1,10,50

For each concurrency N it runs N ComfyUI backends (simulator processes started with
--record-sends), each running one job of ~15 s whose TestSleep node reports progress at ComfyUI's
rate (about 100 `progress` messages a second), in two phases:

- floor: N clients connected straight to the simulators' websockets, each submitting its own
  prompt: the delay from the simulator writing a `progress` message to the client reading it;
- through ASGI: N GPU workers as production runs them (`celery worker -Q gpu.bI --concurrency 1`,
  one per backend, each tracking its job with jobs.tracking.job_track), daphne serving
  anime_production.asgi, and one browser-like websocket client per job on ws/jobs/<id>/ (its API key in X-API-Key).
  Each update a client receives is matched, by (prompt_id, node, step value), to the simulator's
  send time of that `progress` message (GET /sim/sent): that is the delay a person watching sees.

Beside them a subscriber on the channel layer itself (in this process) times when each state
leaves Redis, which splits the delay into tracker + layer and daphne.

The jobs are made by jobs.services.job_create; their tasks carry one ETA a few seconds ahead, so
every subscriber is connected before the N jobs start, together.

Rates are per job and per second of the job's RUNNING time (started_at..finished_at): database
writes as a trigger on jobs_job (installed in the benchmark's own database) logs them, and
broadcasts as the subscriber received them; in brackets, the tracker's own tally for the whole
attempt (its closing log line "N ComfyUI messages, M database writes, K broadcasts"). CPU is the
GPU workers' (pool processes included, from /proc) over the window in which all N jobs ran, per
job, in % of one core. Everything runs on this machine and shares its cores: the simulators (which
stand in for GPU machines), Redis, PostgreSQL, daphne, the workers, these clients, and whatever
else the machine runs: the notes say how busy it was, and whether the slowest 1% of updates came
in bursts that hit every job at once (a stall of the machine, not of one tracker).

Targets (issue "Progress that tells the truth"): at 10 concurrent jobs, p99 at most 25 ms above
the floor; at most 2 database writes and 10 broadcasts per job per second while a job runs.

Isolation: a database of its own (created, migrated and dropped here; --database-url sqlite for a
temporary SQLite file), and private Celery / channel-layer key prefixes on the shared Redis.
`--layer core` or `--layer pubsub` overrides the channel layer of the settings (through
devtools/benchmarks/layer_settings.py) to compare them; the default is whatever settings.py chooses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlparse

import aiohttp

from access.access_log import uvicorn_argv, web_server_argv
from devtools.simulator_process import REPO_ROOT, SimulatorProcess, free_port

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/anime_bench_latency"
LAYERS = {
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
    "core": "channels_redis.core.RedisChannelLayer",
}
ORIGIN = "http://localhost:8000"  # must name a host in ALLOWED_HOSTS (AllowedHostsOriginValidator)
TRACKER_LINE = re.compile(r"job ([0-9a-f-]{36}): (\d+) ComfyUI messages, (\d+) database writes, (\d+) broadcasts")
CPU_SAMPLE_SECONDS = 0.5
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
READY_TIMEOUT = 180.0
SUBSCRIBER_GRACE = 10.0  # how long a subscriber may lag behind the database before it is stopped
START_DELAY = 2.0  # seconds (+ 50 ms a job) between creating the jobs and their start: to subscribe


# --- processes ----------------------------------------------------------------------------------


def tree_cpu_seconds(pid: int) -> float:
    """User+system CPU of a live process and its live descendants (a worker and its pool child).

    Reads only their own /proc files: scanning all of /proc would hold this process's GIL long
    enough to delay the clients' reading, which is what is being measured."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            child_pids = [int(child) for child in children.read().split()]
    except OSError:
        return 0.0  # exited meanwhile
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS + sum(tree_cpu_seconds(child) for child in child_pids)


class Child:
    """A subprocess in a session of its own (so its pool processes can be stopped with it)."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], log_path: Path, ready_line: str, ready_count: int = 1
    ) -> None:
        self.name = name
        self.log_path = log_path
        self.ready_line = ready_line
        self.ready_count = ready_count  # ready once the line was logged this often (one per process)
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
        return self.log().count(self.ready_line) >= self.ready_count

    def stop(self) -> None:
        if self.process.poll() is None:
            # The main process first: a Celery worker then stops its pool itself (a warm shutdown).
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def stop_all(children: Sequence[Child]) -> None:
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    for child in children:
        child.stop()


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
    """One daphne process: its CPU is one pid's, which this benchmark samples."""
    return Child("daphne", web_server_argv("127.0.0.1", port), env, log_dir / "daphne.log", "Listening on TCP address")


def web_server(port: int, env: dict[str, str], log_dir: Path, workers: int = 2) -> Child:
    """The web server as `make run` starts it (run_system): uvicorn, `workers` processes on one port;
    ready once every process has loaded the application."""
    argv = uvicorn_argv("127.0.0.1", port, workers)
    return Child("uvicorn", argv, env, log_dir / "web.log", "Started server process", ready_count=workers)


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat), whoever used them."""
    with open("/proc/stat") as stat:
        ticks = [int(value) for value in stat.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks[:8]) - idle) / CLOCK_TICKS


def _pids(sims: Sequence[SimulatorProcess]) -> list[int]:
    # A simulator that is not running has no pid, and no CPU to count.
    return [sim.pid for sim in sims if sim.pid is not None]


class CpuSampler:
    """CPU seconds of named process groups, sampled in the background, read back at any instant."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.samples: list[tuple[float, dict[str, float]]] = []

    def sample(self) -> None:
        totals = {name: sum(tree_cpu_seconds(pid) for pid in pids) for name, pids in self.groups.items()}
        totals["self"] = time.process_time()
        totals["machine"] = machine_busy_seconds()
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


SentTimes = dict[tuple[str, float], dict[str, float]]


async def sent_times(session: aiohttp.ClientSession, sim: SimulatorProcess, prompt_id: str) -> SentTimes:
    """(node, value) -> {sid: sent_at} of every `progress` message of the prompt."""
    async with session.get(sim.url + "/sim/sent", params={"prompt_id": prompt_id}) as response:
        response.raise_for_status()
        sent: SentTimes = {}
        for entry in await response.json():
            sent.setdefault((str(entry["node"]), float(entry["value"])), {})[entry["sid"]] = entry["sent_at"]
        return sent


async def floor_client(
    session: aiohttp.ClientSession, sim: SimulatorProcess, seconds: float
) -> tuple[list[float], int]:
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
    saw_end: bool = False


FINAL = {"completed", "failed", "cancelled"}


async def subscribe(session: aiohttp.ClientSession, url: str, key: str, subscription: Subscription) -> Subscription:
    """A browser on ws/jobs/<id>/: every state update it receives, with when, until the job ends."""
    async with session.ws_connect(url, headers={"Origin": ORIGIN, "X-API-Key": key}, max_msg_size=0) as ws:
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
                subscription.saw_end = True
                break
    return subscription


async def layer_probe(groups: asyncio.Queue[str], seen: dict[str, list[tuple[float, dict[str, Any]]]]) -> None:
    """Listen on the channel layer next to daphne: when each job state leaves Redis, before daphne."""
    from channels.layers import get_channel_layer

    from jobs.broadcast import job_group

    layer = get_channel_layer()
    channel = await layer.new_channel()

    async def join() -> None:
        while True:
            job_id = await groups.get()
            seen[job_id] = []
            await layer.group_add(job_group(job_id), channel)

    joining = asyncio.create_task(join())
    try:
        while True:
            message = await layer.receive(channel)
            now = time.time()
            # The state travels as JSON text made once by the tracker (jobs.broadcast.job_state_message).
            job = json.loads(message["state_json"]) if "state_json" in message else {}
            seen.setdefault(str(job.get("id")), []).append((now, job))
    finally:
        joining.cancel()


async def orm_call(function: Callable[..., Any], *args: Any) -> Any:
    """Django ORM work off the event loop, in a worker thread whose connection is closed after
    (an open one would keep the benchmark's database from being dropped)."""

    def call() -> Any:
        from django.db import connections

        try:
            return function(*args)
        finally:
            connections.close_all()

    return await asyncio.to_thread(call)


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
    machine_cores: float


@dataclass
class JobResult:
    job_id: str
    prompt_id: str
    running_seconds: float
    started: float
    finished: float
    samples: list[tuple[float, float]]  # (received at, delay) of each matched update
    layer_delays: list[float]
    unmatched: int
    received_while_running: int
    writes_while_running: int
    saw_end: bool
    tracker: tuple[int, int, int] | None  # messages, database writes, broadcasts


@dataclass
class AsgiResult:
    jobs: list[JobResult]
    window: tuple[float, float]
    together: bool  # whether all N jobs ran throughout the window
    running_jobs: float  # how many ran on average during it
    worker_cores: float
    daphne_cores: float
    sims_cores: float
    client_cores: float
    machine_cores: float

    @property
    def delays(self) -> list[float]:
        return [delay for job in self.jobs for _, delay in job.samples]

    def tail_bursts(self) -> tuple[int, int, float]:
        """The updates at or above p99: how many, in how many bursts (apart by more than 200 ms),
        and how many jobs a burst hit on average. Many jobs at once means the machine stalled."""
        limit = percentile(self.delays, 0.99)
        tail = sorted((at, index) for index, job in enumerate(self.jobs) for at, delay in job.samples if delay >= limit)
        bursts: list[set[int]] = []
        previous = float("-inf")
        for at, index in tail:
            if at - previous > 0.2:
                bursts.append(set())
            bursts[-1].add(index)
            previous = at
        return len(tail), len(bursts), statistics.mean(len(burst) for burst in bursts)

    @property
    def layer_delays(self) -> list[float]:
        return [d for job in self.jobs for d in job.layer_delays]

    def per_job_second(self, count: Callable[[JobResult], float]) -> float:
        return statistics.mean(count(job) / job.running_seconds for job in self.jobs)


# --- the benchmark ------------------------------------------------------------------------------


class Bench:
    def __init__(
        self, args: argparse.Namespace, sims: list[SimulatorProcess], env: dict[str, str], log_dir: Path
    ) -> None:
        self.args = args
        self.sims = sims
        self.env = env
        self.log_dir = log_dir
        self.daphne_port = free_port()
        self.api_key = ""
        self.user: Any = None

    def setup_django(self) -> None:
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from django.core.management import call_command

        from access.keys import api_key_create

        call_command("migrate", verbosity=0)
        write_log_install()
        self.user = get_user_model().objects.create_user(f"bench-{uuid.uuid4().hex[:8]}")
        self.api_key = api_key_create(user=self.user, name="progress latency benchmark").key

    def create_jobs(self, n: int, start_at: datetime) -> list[tuple[str, str]]:
        """(job id, prompt id) of N new jobs, one per backend, made by the product's job_create.

        Their tasks carry one ETA, `start_at`: every subscriber is connected before the jobs start,
        and the N jobs start together however loaded the machine gets (50 workers claiming and
        submitting at once starve daphne of CPU for seconds, past its 5 s websocket handshake).
        """
        from jobs import services
        from jobs.tasks import job_run

        send = job_run.apply_async

        def send_at_start(*args: Any, countdown: float = 0, **kwargs: Any) -> Any:
            return send(*args, eta=start_at, **kwargs)

        with mock.patch.object(job_run, "apply_async", send_at_start):
            jobs = [
                services.job_create(
                    user=self.user,
                    workflow=sleep_workflow(self.args.seconds, next(_colours)),
                    job_type="other",
                    backend=f"b{index + 1}",
                )
                for index in range(n)
            ]
        return [(str(job.id), str(job.prompt_id)) for job in jobs]

    # --- floor ---

    async def floor(self, n: int) -> FloorResult:
        sims = self.sims[:n]
        sampler = CpuSampler({"sims": _pids(sims)})
        sampling = asyncio.create_task(sampler.run())
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            start = time.time()
            results = await asyncio.gather(*(floor_client(session, sim, self.args.seconds) for sim in sims))
            end = time.time()
        sampling.cancel()
        sampler.sample()
        delays = [d for found, _ in results for d in found]
        return FloorResult(
            delays,
            sims_cores=sampler.core_share("sims", start, end),
            client_cores=sampler.core_share("self", start, end),
            machine_cores=sampler.core_share("machine", start, end),
        )

    # --- through the tracker, the layer and daphne ---

    async def through_asgi(self, n: int, workers: list[Child], web: Child) -> AsgiResult:
        sims = self.sims[:n]
        sampler = CpuSampler({"workers": [w.pid for w in workers], "daphne": [web.pid], "sims": _pids(sims)})
        sampling = asyncio.create_task(sampler.run())
        base = f"ws://127.0.0.1:{self.daphne_port}/ws/jobs"
        probe_groups: asyncio.Queue[str] = asyncio.Queue()
        probed: dict[str, list[tuple[float, dict[str, Any]]]] = {}
        probing = asyncio.create_task(layer_probe(probe_groups, probed))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            subscribers, subscriptions, prompts = [], [], {}
            start_at = datetime.now(UTC) + timedelta(seconds=START_DELAY + 0.05 * n)
            for index, (job_id, prompt_id) in enumerate(await orm_call(self.create_jobs, n, start_at)):
                prompts[job_id] = (prompt_id, sims[index])
                probe_groups.put_nowait(job_id)
                url = f"{base}/{job_id}/"
                subscriptions.append(Subscription(job_id))
                subscribers.append(asyncio.create_task(subscribe(session, url, self.api_key, subscriptions[-1])))
            await until_final(list(prompts), subscribers, deadline=time.monotonic() + self.args.seconds * 10 + 60)
            sent = {job_id: await sent_times(session, sim, prompt_id) for job_id, (prompt_id, sim) in prompts.items()}
        sampling.cancel()
        probing.cancel()
        sampler.sample()
        rows = await orm_call(job_rows, list(prompts))
        tracker = await asyncio.to_thread(tracker_counts, workers, list(prompts))
        writes = await orm_call(write_log_times, list(prompts))
        jobs = [
            job_result(
                sub,
                probed.get(sub.job_id, []),
                rows[sub.job_id],
                sent[sub.job_id],
                writes[sub.job_id],
                tracker.get(sub.job_id),
            )
            for sub in subscriptions
        ]
        window = (max(j.started for j in jobs), min(j.finished for j in jobs))
        together = window[1] - window[0] >= 1.0
        if not together:
            # Trackers far behind ComfyUI (an overloaded machine) see their jobs start and end late
            # and unevenly: measure from the first start to the last end instead.
            window = (min(j.started for j in jobs), max(j.finished for j in jobs))
        running = sum(max(0.0, min(j.finished, window[1]) - max(j.started, window[0])) for j in jobs)
        return AsgiResult(
            jobs=jobs,
            window=window,
            together=together,
            running_jobs=running / (window[1] - window[0]),
            worker_cores=sampler.core_share("workers", *window),
            daphne_cores=sampler.core_share("daphne", *window),
            sims_cores=sampler.core_share("sims", *window),
            client_cores=sampler.core_share("self", *window),
            machine_cores=sampler.core_share("machine", *window),
        )


async def until_final(job_ids: list[str], subscribers: list[asyncio.Task[Any]], deadline: float) -> None:
    """Until every job is final in the database and its subscriber saw it end, or gave up: the
    layer delivers at most once, so a subscriber may never be told the end (it keeps what it got)."""
    while time.monotonic() < deadline:
        if all(task.done() for task in subscribers):
            break
        rows = await orm_call(job_rows, job_ids)
        if all(row["status"] in FINAL for row in rows.values()):
            await asyncio.wait(subscribers, timeout=SUBSCRIBER_GRACE)
            break
        await asyncio.sleep(1.0)
    for task in subscribers:
        task.cancel()
    await asyncio.gather(*subscribers, return_exceptions=True)


def job_rows(job_ids: list[str]) -> dict[str, Mapping[str, Any]]:
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


WRITE_LOG_SQL = {
    "postgresql": [
        "CREATE TABLE bench_job_writes (job_id text, at double precision)",
        """CREATE FUNCTION bench_job_write() RETURNS trigger AS $$ BEGIN
               INSERT INTO bench_job_writes VALUES (NEW.id::text, extract(epoch FROM clock_timestamp()));
               RETURN NEW;
           END $$ LANGUAGE plpgsql""",
        "CREATE TRIGGER bench_job_write AFTER UPDATE ON jobs_job FOR EACH ROW EXECUTE FUNCTION bench_job_write()",
    ],
    "sqlite": [
        "CREATE TABLE bench_job_writes (job_id text, at real)",
        """CREATE TRIGGER bench_job_write AFTER UPDATE ON jobs_job BEGIN
               INSERT INTO bench_job_writes VALUES (NEW.id, (julianday('now') - 2440587.5) * 86400.0);
           END""",
    ],
}


def write_log_install() -> None:
    """Log every UPDATE of a jobs_job row with its time, in the benchmark's own database only: the
    tracker's writes all go through that row (progress, heartbeat, transitions), so this counts
    them while the job runs, which the tracker's own tally (whole attempt) cannot."""
    from django.db import connection

    with connection.cursor() as cursor:
        for statement in WRITE_LOG_SQL[connection.vendor]:
            cursor.execute(statement)


def write_log_times(job_ids: list[str]) -> dict[str, list[float]]:
    from django.db import connection

    times: dict[str, list[float]] = {job_id: [] for job_id in job_ids}
    with connection.cursor() as cursor:
        cursor.execute("SELECT job_id, at FROM bench_job_writes")
        for job_id, at in cursor.fetchall():
            key = str(uuid.UUID(job_id))
            if key in times:
                times[key].append(at)
    return times


def matched_delays(
    updates: list[tuple[float, dict[str, Any]]], sent: SentTimes, sid: str
) -> tuple[list[tuple[float, float]], int]:
    """(received at, delay) of the running job states whose step matches a sent `progress`, and
    how many did not match."""
    delays, unmatched = [], 0
    for received_at, job in updates:
        step, node = job.get("step"), job.get("current_node")
        if job.get("status") != "running" or not step or not node:
            continue
        sent_at = sent.get((str(node["id"]), float(step["value"])), {}).get(sid)
        if sent_at is None:
            unmatched += 1
        else:
            delays.append((received_at, received_at - sent_at))
    return delays, unmatched


def job_result(
    sub: Subscription,
    probed: list[tuple[float, dict[str, Any]]],
    row: dict[str, Any],
    sent: SentTimes,
    writes: list[float],
    tracker: tuple[int, int, int] | None,
) -> JobResult:
    if row["status"] != "completed" or row["started_at"] is None:
        raise RuntimeError(f"job {sub.job_id} ended {row['status']}")
    started, finished = row["started_at"].timestamp(), row["finished_at"].timestamp()
    sid = f"tracker-{sub.job_id}"  # jobs.tracking.tracker_client_id: the prompt's messages go there only
    samples, unmatched = matched_delays(sub.updates, sent, sid)
    running = sum(1 for _, job in sub.updates if job["status"] == "running")
    return JobResult(
        job_id=sub.job_id,
        prompt_id=str(row["prompt_id"]),
        running_seconds=finished - started,
        started=started,
        finished=finished,
        samples=samples,
        layer_delays=[delay for _, delay in matched_delays(probed, sent, sid)[0]],
        unmatched=unmatched,
        received_while_running=running,
        writes_while_running=sum(1 for at in writes if started < at < finished),
        saw_end=sub.saw_end,
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
        try:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        except psycopg.errors.ObjectInUse:
            raise SystemExit(
                f"database {name} is in use: another run of this benchmark? (or pass --database-url)"
            ) from None
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url
    finally:
        if not keep:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def clear_redis_keys(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.delete(key)


def system_environment(name: str, database_url: str, work_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment of a benchmark's web server and workers: its own database, its own Redis key
    prefix (`bench-<name>-<pid>-`, what clear_redis_keys removes), DEBUG off as deployed (DEBUG keeps
    every query in memory) with a SECRET_KEY of its own, plain HTTP on loopback; then `overrides`."""
    prefix = f"bench-{name}-{os.getpid()}-"
    env = {key: value for key, value in os.environ.items() if key != "COMFYUI_URL"}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=env.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        CELERY_KEY_PREFIX=prefix,
        CHANNEL_LAYER_PREFIX=f"{prefix}asgi",
        CACHE_KEY_PREFIX=f"{prefix}cache",
        MEDIA_ROOT=str(work_dir / "media"),
        DEBUG="0",
        SECRET_KEY=os.environ.get("SECRET_KEY") or secrets.token_urlsafe(32),
        SECURE_SSL_REDIRECT="0",  # TLS ends at the proxy in front of the web server
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
        DJANGO_SETTINGS_MODULE="anime_production.settings",
    )
    env.update(overrides)
    return env


def bench_environment(
    args: argparse.Namespace, sims: list[SimulatorProcess], database_url: str, work_dir: Path
) -> dict[str, str]:
    backends = ",".join(f"b{i + 1}={sim.url}" for i, sim in enumerate(sims))
    env = system_environment("latency", database_url, work_dir, COMFYUI_BACKENDS=backends)
    if args.layer != "settings":
        env.update(DJANGO_SETTINGS_MODULE="devtools.benchmarks.layer_settings", BENCH_CHANNEL_LAYER=LAYERS[args.layer])
    return env


# --- report -------------------------------------------------------------------------------------

HEADER = (
    f"{'jobs':>4} | {'floor p50/p99 ms':>16} | {'ASGI p50/p99 ms':>16} | {'p99 above floor':>15} | "
    f"{'DB writes/job/s':>17} | {'broadcasts/job/s':>17} | {'tracker CPU %/job':>17}"
)
LEGEND = """\
DB writes/job/s: UPDATEs of the job's row while it was RUNNING, per running second (the tracker's
  whole tally / running seconds in brackets: it also counts claim, submit and close).
broadcasts/job/s: updates a subscriber received while the job was RUNNING, per running second
  (the tracker's whole tally / running seconds in brackets).
tracker CPU %/job: CPU of the GPU workers (main and pool process) while all N jobs ran, per job."""


def table_row(n: int, floor: FloorResult, asgi: AsgiResult) -> str:
    f50, f99 = percentile(floor.delays, 0.5), percentile(floor.delays, 0.99)
    a50, a99 = percentile(asgi.delays, 0.5), percentile(asgi.delays, 0.99)
    tallied = all(j.tracker for j in asgi.jobs)
    writes = asgi.per_job_second(lambda j: j.writes_while_running)
    received = asgi.per_job_second(lambda j: j.received_while_running)
    # Only read when every job has its tracker's tally (`tallied`).
    tracker_writes = asgi.per_job_second(lambda j: j.tracker[1] if j.tracker else 0) if tallied else float("nan")
    tracker_broadcasts = asgi.per_job_second(lambda j: j.tracker[2] if j.tracker else 0) if tallied else float("nan")
    cpu = asgi.worker_cores / asgi.running_jobs * 100
    return (
        f"{n:>4} | {ms(f50):>7} / {ms(f99):>6} | {ms(a50):>7} / {ms(a99):>6} | {ms(a99 - f99):>15} | "
        f"{f'{writes:.2f} ({tracker_writes:.2f})':>17} | {f'{received:.2f} ({tracker_broadcasts:.2f})':>17} | "
        f"{cpu:>17.2f}"
    )


def details(n: int, floor: FloorResult, asgi: AsgiResult) -> str:
    window = asgi.window[1] - asgi.window[0]
    tail, bursts, jobs_per_burst = asgi.tail_bursts()
    together = (
        f"all {n} jobs ran together for {window:.1f}s"
        if asgi.together
        else f"the jobs hardly overlapped: {asgi.running_jobs:.1f} of {n} ran on average over the {window:.1f}s "
        f"from the first start to the last end"
    )
    return "\n".join(
        [
            f"  N={n}: floor: {len(floor.delays)} progress messages (max {ms(max(floor.delays))} ms); simulators "
            f"{floor.sims_cores * 100:.0f}% of a core, these clients {floor.client_cores * 100:.0f}%; the machine "
            f"{floor.machine_cores * 100:.0f}% of a core ({os.cpu_count()} cores, shared)",
            f"  N={n}: on the channel layer (a subscriber beside daphne): p50 {ms(percentile(asgi.layer_delays, 0.5))} "
            f"p99 {ms(percentile(asgi.layer_delays, 0.99))} ms",
            f"  N={n}: through ASGI: {len(asgi.delays)} matched updates (max {ms(max(asgi.delays))} ms, "
            f"{sum(j.unmatched for j in asgi.jobs)} unmatched, {sum(not j.saw_end for j in asgi.jobs)} subscribers "
            f"never told the end); {together}, using "
            f"workers {asgi.worker_cores * 100:.0f}%, daphne {asgi.daphne_cores * 100:.0f}%, simulators "
            f"{asgi.sims_cores * 100:.0f}%, these clients {asgi.client_cores * 100:.0f}% of a core; the machine "
            f"{asgi.machine_cores * 100:.0f}% of a core (Redis, PostgreSQL and anyone else included)",
            f"  N={n}: the slowest 1% ({tail} updates) came in {bursts} bursts, each hitting {jobs_per_burst:.1f} of "
            f"the {n} jobs at once",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.benchmarks.progress_latency", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--jobs", default="1,10,50", help="concurrencies to measure, comma-separated")
    parser.add_argument("--seconds", type=float, default=15.0, help="how long each job's TestSleep runs")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="PostgreSQL URL, or 'sqlite'")
    parser.add_argument("--layer", choices=("settings", *LAYERS), default="settings", help="channel layer")
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    args = parser.parse_args(argv)
    concurrencies = [int(n) for n in args.jobs.split(",")]
    # Stopped with SIGTERM (or SIGINT in a background job, where it is ignored), still stop every
    # process started here and drop the database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    work_dir = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    sims = [
        SimulatorProcess(
            output_dir=work_dir / f"sim{i + 1}" / "output", extra_args=["--record-sends", "--log-level", "WARNING"]
        )
        for i in range(max(concurrencies))
    ]
    try:
        for sim in sims:
            sim.start()
        with bench_database(args.database_url, work_dir, args.keep) as database_url:
            env = bench_environment(args, sims, database_url, work_dir)
            try:
                results = measure(args, concurrencies, sims, env, work_dir)
            finally:
                clear_redis_keys(env.get("REDIS_URL", "redis://127.0.0.1:6379/0"), env["CELERY_KEY_PREFIX"])
    finally:
        for sim in sims:
            sim.stop()
        if not args.keep:
            shutil.rmtree(work_dir, ignore_errors=True)
    print()
    rows = [table_row(*result) for result in results]
    print(HEADER, *rows, LEGEND, *(details(*result) for result in results), sep="\n")


def product_version() -> str:
    """The commit measured, and whether product files differ from it (others may be editing them)."""

    def git(*args: str) -> str:
        # Outside a git checkout the version is left blank rather than stopping the benchmark.
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False).stdout.strip()

    changed = git("status", "--porcelain", "--", "anime_production", "jobs", "monitoring")
    return f"commit {git('rev-parse', '--short', 'HEAD')}" + (" with uncommitted product changes" if changed else "")


def measure(
    args: argparse.Namespace,
    concurrencies: list[int],
    sims: list[SimulatorProcess],
    env: dict[str, str],
    work_dir: Path,
) -> list[tuple[int, FloorResult, AsgiResult]]:
    os.environ.update(env)
    os.environ.pop("COMFYUI_URL", None)
    log_dir = work_dir / "logs"
    log_dir.mkdir()
    bench = Bench(args, sims, env, log_dir)
    bench.setup_django()
    from django.conf import settings
    from django.db import connections

    web = daphne(bench.daphne_port, env, log_dir)
    try:
        wait_ready([web])
        print(
            f"{product_version()}; channel layer {settings.CHANNEL_LAYERS['default']['BACKEND']}, database "
            f"{settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}, jobs of {args.seconds:g}s, "
            f"TRACKER_DB_INTERVAL={settings.TRACKER_DB_INTERVAL}, "
            f"TRACKER_BROADCAST_INTERVAL={settings.TRACKER_BROADCAST_INTERVAL}, logs in {log_dir}",
            flush=True,
        )
        results = []
        for n in concurrencies:
            floor = asyncio.run(bench.floor(n))
            workers = [gpu_worker(f"b{i + 1}", env, log_dir) for i in range(n)]
            try:
                wait_ready(workers)
                asgi = asyncio.run(bench.through_asgi(n, workers, web))
            finally:
                stop_all(workers)
            results.append((n, floor, asgi))
            print(table_row(n, floor, asgi), details(n, floor, asgi), sep="\n", flush=True)
        return results
    finally:
        web.stop()
        connections.close_all()


if __name__ == "__main__":
    main()
