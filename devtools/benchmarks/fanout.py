"""Live fan-out: how many job updates a web server delivers to websocket subscribers, and how late.

    .venv/bin/python -m devtools.benchmarks.fanout                        # the goal's scenario, daphne
    .venv/bin/python -m devtools.benchmarks.fanout --server uvicorn --workers 2

The scenario of issue 12, goal 2: 100 running jobs, each broadcast at the tracker's rate (one state
every TRACKER_BROADCAST_INTERVAL, ~8/s) by jobs.broadcast.job_broadcast from this process, through
the real channel layer; 2,000 subscribers on ws/jobs/<id>/ spread over the 100 jobs (each with the
API key of the job's owner, in X-API-Key), and 20 staff sockets on ws/jobs/ (every job's progress at
the lists' pace, as the tracker sends it: at most once per TRACKER_LIST_BROADCAST_INTERVAL a job,
jobs.broadcast.ListPacer).
The payloads are the product's: each job's state as jobs.selectors.job_state makes it, with its
progress, step and version moved on at every broadcast. A delay is matched by (job, version) to the
time this process handed that state to job_broadcast, so nothing is added to the payload.

Two phases in one run, with the same clients (in processes of their own, fanout_clients.py):
- floor: a bare websocket fan-out (bare_fanout.py: aiohttp on the same Redis channels, no consumer)
  writing the same text to the same sockets;
- the product: `--server` serving anime_production.asgi, its RSS and CPU sampled from /proc.
Each phase starts with the connect storm: every socket opened at once, counted by when its
handshake and its snapshot arrived. Then the broadcasts run for `--seconds`, then `--drain`
seconds for late messages. Delivered messages/s counts what arrived while the broadcasts ran.

Isolation: a database of its own (created, migrated and dropped here), private channel-layer,
Celery and cache prefixes on the shared Redis. Everything shares this machine's cores: the notes
say how busy it was.
"""

from __future__ import annotations

import argparse
import gc
import math
import multiprocessing
import os
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from access.access_log import ASGI_APPLICATION, web_server_argv
from anime_production.collector import startup_objects_frozen
from devtools.benchmarks.fanout_clients import Connected, Received, clients_process
from devtools.benchmarks.progress_latency import (
    ORIGIN,
    bench_database,
    clear_redis_keys,
    machine_busy_seconds,
    ms,
    percentile,
    product_version,
    system_environment,
    tree_cpu_seconds,
)
from devtools.processes import Process, free_port

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/anime_bench_fanout"
SERVERS = ("daphne", "uvicorn", "granian")
SAMPLE_SECONDS = 0.5
STORM_GOAL_SECONDS = 10.0
GOAL = "goal: >= 10,000 msgs/s in one process; p99 <= floor + 100 ms; RSS <= 250 MB; 2,000 at once connect in 10 s"


# --- the server under test ----------------------------------------------------------------------


def server_argv(server: str, port: int, workers: int) -> list[str]:
    """How each candidate serves the project: its access log off (query strings carry tickets)."""
    if server == "daphne":
        if workers != 1:
            raise SystemExit("daphne runs one process: --workers 1")
        return web_server_argv("127.0.0.1", port)
    if server == "uvicorn":
        return [
            sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
            "--no-access-log", "--lifespan", "on", "--log-level", "warning", "--backlog", "4096", ASGI_APPLICATION,
        ]  # fmt: skip
    return [
        sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers), "--log-level", "warning", "--backlog", "4096", ASGI_APPLICATION,
    ]  # fmt: skip


def tree_pids(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            child_pids = [int(child) for child in children.read().split()]
    except OSError:
        return []
    return [pid, *(grandchild for child in child_pids for grandchild in tree_pids(child))]


def tree_rss_bytes(pid: int) -> int:
    total = 0
    for member in tree_pids(pid):
        try:
            with open(f"/proc/{member}/statm") as statm:
                total += int(statm.read().split()[1]) * resource.getpagesize()
        except OSError:
            pass
    return total


class Sampler(threading.Thread):
    """CPU seconds and RSS of a process tree, and the machine's busy seconds, every half second."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, float, int, float]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.samples.append(
                (time.time(), tree_cpu_seconds(self.pid), tree_rss_bytes(self.pid), machine_busy_seconds())
            )
            self.stopping.wait(SAMPLE_SECONDS)

    def stop(self) -> None:
        self.stopping.set()
        self.join()

    def between(self, start: float, end: float) -> tuple[float, int, float]:
        """(cores used by the tree, its peak RSS, cores the machine was busy) between two instants."""
        inside = [sample for sample in self.samples if start <= sample[0] <= end] or self.samples[-1:]
        first, last = inside[0], inside[-1]
        span = max(last[0] - first[0], 1e-9)
        return (last[1] - first[1]) / span, max(sample[2] for sample in inside), (last[3] - first[3]) / span


# --- fixtures -----------------------------------------------------------------------------------


@dataclass
class Fixtures:
    job_ids: list[str]
    states: list[dict[str, Any]]
    user_ids: list[int]
    keys: list[str]  # the API key of each job's owner
    staff_key: str


def fixtures_make(jobs: int) -> Fixtures:
    """`jobs` running jobs, each of its own user (20 sockets a user stays under WS_CONNECTS_PER_MINUTE),
    and a superuser for the staff sockets."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from access.keys import api_key_create
    from jobs import selectors
    from jobs.models import Job, JobStatus

    users = get_user_model().objects
    staff = users.create_user("fanout-staff", is_staff=True, is_superuser=True)
    now = timezone.now()
    made, keys, owners = [], [], []
    for index in range(jobs):
        user = users.create_user(f"fanout-{index}")
        owners.append(user)
        keys.append(api_key_create(user=user, name="fanout").key)
        made.append(
            Job.objects.create(
                user=user,
                backend="default",
                job_type="image",
                name=f"shot {index:03d} key art",
                workflow={"3": {"class_type": "KSampler", "inputs": {"steps": 30}}},
                status=JobStatus.RUNNING,
                submitted_at=now - timedelta(seconds=12),
                started_at=now - timedelta(seconds=10),
                current_node_id="3",
                current_node_class="KSampler",
                current_node_name="KSampler",
                current_node_category="sampling",
                step_value=1,
                step_max=30,
                nodes_total=7,
                nodes_done=3,
                progress=0.3,
                version=1,
                last_progress_at=now,
            )
        )
    return Fixtures(
        job_ids=[str(job.id) for job in made],
        states=selectors.job_states(made),
        user_ids=[user.pk for user in owners],
        keys=keys,
        staff_key=api_key_create(user=staff, name="fanout").key,
    )


def sockets_for(fixtures: Fixtures, subscribers: int, staff: int) -> list[dict[str, Any]]:
    jobs = len(fixtures.job_ids)
    sockets = [
        {
            "path": f"/ws/jobs/{fixtures.job_ids[i % jobs]}/",
            "headers": {"Origin": ORIGIN, "X-API-Key": fixtures.keys[i % jobs]},
        }
        for i in range(subscribers)
    ]
    staff_headers = {"Origin": ORIGIN, "X-API-Key": fixtures.staff_key}
    return sockets + [{"path": "/ws/jobs/", "headers": staff_headers} for _ in range(staff)]


# --- publishing ---------------------------------------------------------------------------------


@dataclass
class Published:
    sent: dict[tuple[int, int], float] = field(default_factory=dict)  # (job index, version) -> time.time()
    to_lists: set[tuple[int, int]] = field(default_factory=set)  # the states the job lists were sent too
    start: float = 0.0
    end: float = 0.0
    behind: float = 0.0  # how far behind its schedule the publisher fell at worst (seconds)


def publish(fixtures: Fixtures, seconds: float, interval: float) -> Published:
    """Every job's state, one job after another, each job once per `interval`, for `seconds`: the
    tracker's broadcasts, as its coalescer makes them (jobs.broadcast.job_broadcast, synchronous,
    to the job lists at their pace: jobs.broadcast.ListPacer).

    The collector is off while it publishes: in this process Django's objects are not frozen, and
    its full collections (93-177 ms in a run of 2026-12-08) delayed the broadcasts after their send
    time was taken, which counted as every subscriber's delay."""
    startup_objects_frozen()
    gc.disable()
    try:
        return _published(fixtures, seconds, interval)
    finally:
        gc.enable()
        gc.unfreeze()


def _published(fixtures: Fixtures, seconds: float, interval: float) -> Published:
    from jobs.broadcast import ListPacer, job_broadcast

    jobs = len(fixtures.states)
    pacers = [ListPacer() for _ in range(jobs)]
    versions = [state["version"] for state in fixtures.states]
    published = Published()
    start = time.monotonic() + 0.05
    published.start = time.time() + 0.05
    count = 0
    while True:
        due = start + (count // jobs) * interval + (count % jobs) * interval / jobs
        if due - start >= seconds:
            break
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        else:
            published.behind = max(published.behind, -wait)
        index = count % jobs
        versions[index] += 1
        step = 1 + versions[index] % 30
        state = dict(
            fixtures.states[index],
            version=versions[index],
            progress=round(0.3 + step / 100, 4),
            progress_percent=round(30 + step, 1),
            step={**(fixtures.states[index]["step"] or {}), "value": step, "max": 30},
        )
        published.sent[(index, versions[index])] = time.time()
        now = time.monotonic()
        to_lists = pacers[index].due(now)  # as the tracker decides, by the moment of the broadcast
        if to_lists:
            published.to_lists.add((index, versions[index]))
        job_broadcast(state, fixtures.user_ids[index], [], to_lists=to_lists)
        pacers[index].sent(now, state, to_lists=to_lists)
        count += 1
    published.end = time.time()
    return published


# --- one phase ----------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    connects: int
    snapshots_in_goal: int
    storm_seconds: float  # from opening every socket to the last snapshot
    connect_failures: dict[str, int]
    delays: list[float]
    sent_offsets: list[float]  # each delay's message: when it was handed to job_broadcast, from the start
    expected: int
    delivered: int
    delivered_per_second: float
    server_cores: float
    server_peak_rss: int
    machine_cores: float
    publisher_behind: float
    subscriptions: str
    clients_cores: float = 0.0

    @property
    def cpu_per_message(self) -> float:
        """Server CPU seconds per message delivered while the broadcasts ran (less noisy than rates)."""
        return self.server_cores / self.delivered_per_second if self.delivered_per_second else float("nan")


def group_subscriptions(redis_url: str, prefix: str, job_id: str) -> str:
    """How many Redis connections subscribe to one job's group and to the staff group: the number of
    web processes if each subscribes once per group."""
    import redis

    client = redis.Redis.from_url(redis_url)
    names = [f"{prefix}__group__job-{job_id}", f"{prefix}__group__jobs-staff"]
    counts: dict[bytes, int] = dict(client.pubsub_numsub(*names))  # type: ignore[arg-type]
    return f"{counts[names[0].encode()]} per job group, {counts[names[1].encode()]} on the staff group"


def run_phase(
    name: str,
    server: Process,
    url: str,
    ready: str,
    fixtures: Fixtures,
    args: argparse.Namespace,
    env: dict[str, str],
) -> Phase:
    with server.start():
        if ready:
            server.wait_for_url(ready, statuses=range(200, 500), timeout=120)
        else:
            server.wait_for_port(int(url.rsplit(":", 1)[1]), timeout=60)
        published, connected, received, subscriptions, sampler, clients_cores = clients_run(
            server, url, fixtures, args, env
        )
    phase = phase_result(name, published, connected, received, subscriptions, sampler, fixtures, args)
    phase.clients_cores = clients_cores
    return phase


def clients_run(
    server: Process, url: str, fixtures: Fixtures, args: argparse.Namespace, env: dict[str, str]
) -> tuple[Published, list[Connected], list[Received], str, Sampler, float]:
    """The connect storm, then the broadcasts, with the clients in processes of their own."""
    sockets = sockets_for(fixtures, args.subscribers, args.staff)
    context = multiprocessing.get_context("spawn")
    pipes: list[Connection] = []
    children = []
    for share in range(args.client_processes):
        ours, theirs = context.Pipe()
        child = context.Process(
            target=clients_process, args=(url, sockets[share :: args.client_processes], fixtures.job_ids, theirs)
        )
        child.start()
        pipes.append(ours)
        children.append(child)
    sampler = Sampler(server.pid or 0)
    sampler.start()
    client_samplers = [Sampler(child.pid or 0) for child in children]
    for client_sampler in client_samplers:
        client_sampler.start()
    try:
        for pipe in pipes:
            pipe.send("connect")
        connected: list[Connected] = [pipe.recv() for pipe in pipes]
        subscriptions = group_subscriptions(env["REDIS_URL"], env["CHANNEL_LAYER_PREFIX"], fixtures.job_ids[0])
        published = publish(fixtures, args.seconds, args.interval)
        time.sleep(args.drain)
        for pipe in pipes:
            pipe.send("stop")
        received: list[Received] = [pipe.recv() for pipe in pipes]
    finally:
        sampler.stop()
        for client_sampler in client_samplers:
            client_sampler.stop()
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
    clients_cores = sum(c.between(published.start, published.end)[0] for c in client_samplers)
    return published, connected, received, subscriptions, sampler, clients_cores


def phase_result(
    name: str,
    published: Published,
    connected: list[Connected],
    received: list[Received],
    subscriptions: str,
    sampler: Sampler,
    fixtures: Fixtures,
    args: argparse.Namespace,
) -> Phase:
    opened = min((at for c in connected for at in c.opened_at), default=published.start)
    handshakes = sum(len(c.handshake_at) for c in connected)
    snapshots = sorted(at - opened for c in connected for at in c.snapshot_at)
    failures: dict[str, int] = {}
    for c in connected:
        for kind, count in c.failures.items():
            failures[kind] = failures.get(kind, 0) + count
    delays, sent_offsets, inside = [], [], 0
    for share in received:
        for at, job, version in zip(share.at, share.job, share.version, strict=True):
            sent = published.sent.get((job, version))
            if sent is not None:
                delays.append(at - sent)
                sent_offsets.append(sent - published.start)
                inside += published.start <= at <= published.end
    cores, rss, machine = sampler.between(published.start, published.end)
    listeners = [
        args.subscribers // len(fixtures.job_ids) + (i < args.subscribers % len(fixtures.job_ids))
        for i in range(len(fixtures.job_ids))
    ]
    expected = sum(
        listeners[job] + args.staff * ((job, version) in published.to_lists) for job, version in published.sent
    )
    return Phase(
        name=name,
        connects=handshakes,
        snapshots_in_goal=sum(1 for at in snapshots if at <= STORM_GOAL_SECONDS),
        storm_seconds=snapshots[-1] if snapshots else float("nan"),
        connect_failures=failures,
        delays=delays,
        sent_offsets=sent_offsets,
        expected=expected,
        delivered=len(delays),
        delivered_per_second=inside / (published.end - published.start),
        server_cores=cores,
        server_peak_rss=rss,
        machine_cores=machine,
        publisher_behind=published.behind,
        subscriptions=subscriptions,
    )


# --- report -------------------------------------------------------------------------------------

HEADER = (
    f"{'phase':<18} | {'connected (in 10 s) / last':>26} | {'delivered / expected':>22} | {'msgs/s':>7} | "
    f"{'p50 / p99 ms':>17} | {'above floor p99':>15} | {'CPU cores':>9} | {'CPU µs/msg':>10} | {'peak RSS MB':>11}"
)


def row(phase: Phase, floor: Phase | None) -> str:
    p50, p99 = (percentile(phase.delays, f) if phase.delays else float("nan") for f in (0.5, 0.99))
    above = ms(p99 - percentile(floor.delays, 0.99)) if floor and floor.delays and phase is not floor else "-"
    storm = f"{phase.connects} ({phase.snapshots_in_goal}) / {phase.storm_seconds:.1f} s"
    return (
        f"{phase.name:<18} | {storm:>26} | {f'{phase.delivered} / {phase.expected}':>22} | "
        f"{phase.delivered_per_second:>7.0f} | {f'{ms(p50)} / {ms(p99)}':>17} | {above:>15} | "
        f"{phase.server_cores:>9.2f} | {phase.cpu_per_message * 1e6:>10.1f} | {phase.server_peak_rss / 2**20:>11.0f}"
    )


def per_second(phase: Phase) -> str:
    """Where in the run the tail was: each second of broadcasts, its p99 and its latest delivery."""
    seconds: dict[int, list[float]] = {}
    for offset, delay in zip(phase.sent_offsets, phase.delays, strict=True):
        seconds.setdefault(int(offset), []).append(delay)
    cells = (
        f"{second}s {ms(percentile(delays, 0.99))}/{ms(max(delays))}" for second, delays in sorted(seconds.items())
    )
    return f"  {phase.name}, p99/max ms by the second it was sent: " + ", ".join(cells)


def notes(phase: Phase) -> str:
    failures = ", ".join(f"{count} {kind}" for kind, count in phase.connect_failures.items()) or "none"
    return (
        f"  {phase.name}: connect failures: {failures}; Redis subscriptions: {phase.subscriptions}; the clients "
        f"{phase.clients_cores * 100:.0f}% of a core, the machine "
        f"{phase.machine_cores * 100:.0f}% of a core busy ({os.cpu_count()} cores, shared); the publisher fell "
        f"{phase.publisher_behind * 1000:.0f} ms behind its schedule at worst"
    )


def environment(args: argparse.Namespace, database_url: str, work_dir: Path) -> dict[str, str]:
    # The access log would write a line per connect.
    return system_environment("fanout", database_url, work_dir, LOG_LEVEL="WARNING")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.benchmarks.fanout", description=__doc__.split("\n")[0])
    parser.add_argument("--server", choices=SERVERS, default="daphne")
    parser.add_argument("--workers", type=int, default=1, help="web processes behind the one port (not daphne)")
    parser.add_argument("--jobs", type=int, default=100, help="running jobs broadcasting")
    parser.add_argument("--subscribers", type=int, default=2000, help="sockets on ws/jobs/<id>/, spread over the jobs")
    parser.add_argument("--staff", type=int, default=20, help="staff sockets on ws/jobs/ (the lists' pace)")
    parser.add_argument("--interval", type=float, default=None, help="seconds between one job's broadcasts "
                        "(default TRACKER_BROADCAST_INTERVAL)")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the broadcasts run")
    parser.add_argument("--drain", type=float, default=5.0, help="seconds for late messages after the last one")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--no-floor", action="store_true", help="skip the bare fan-out phase")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="PostgreSQL URL, or 'sqlite'")
    parser.add_argument("--per-second", action="store_true", help="each phase's p99 by the second it was sent")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # Two sockets per subscriber on this machine (client and server), and the servers inherit it.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    work_dir = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    phases: list[Phase] = []
    try:
        with bench_database(args.database_url, work_dir, keep=False) as database_url:
            env = environment(args, database_url, work_dir)
            os.environ.update(env)
            try:
                phases = measure(args, env, work_dir)
            finally:
                clear_redis_keys(env["REDIS_URL"], env["CELERY_KEY_PREFIX"])
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    floor = next((phase for phase in phases if phase.name == "floor"), None)
    print("", GOAL, HEADER, *(row(phase, floor) for phase in phases), *(notes(phase) for phase in phases), sep="\n")
    if args.per_second:
        print(*(per_second(phase) for phase in phases), sep="\n")


def measure(args: argparse.Namespace, env: dict[str, str], work_dir: Path) -> list[Phase]:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections

    call_command("migrate", verbosity=0)
    if args.interval is None:
        args.interval = settings.TRACKER_BROADCAST_INTERVAL
    fixtures = fixtures_make(args.jobs)
    connections.close_all()  # the servers' connections are theirs; ours would only hold the database open
    rate = args.jobs / args.interval
    # The lists get a job's progress at most once per interval: every k-th of its broadcasts.
    lists_rate = args.jobs / (args.interval * math.ceil(settings.TRACKER_LIST_BROADCAST_INTERVAL / args.interval))
    print(
        f"{product_version()}; {args.jobs} jobs at {1 / args.interval:.1f} broadcasts/s each ({rate:.0f}/s; "
        f"to the lists {lists_rate:.0f}/s), {args.subscribers} subscribers + {args.staff} staff sockets: "
        f"{rate * args.subscribers / args.jobs + lists_rate * args.staff:.0f} messages/s to deliver; {args.server} "
        f"x{args.workers}; database {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}; "
        f"{args.seconds:g} s of broadcasts",
        flush=True,
    )
    logs = work_dir / "logs"
    phases = []
    if not args.no_floor:
        port = free_port()
        argv = [sys.executable, "-m", "devtools.benchmarks.bare_fanout", "--port", str(port),
                "--prefix", env["CHANNEL_LAYER_PREFIX"], "--redis-url", env["REDIS_URL"]]  # fmt: skip
        floor = Process(argv, env=env, log_path=logs / "floor.log", name="floor")
        phases.append(run_phase("floor", floor, f"ws://127.0.0.1:{port}", "", fixtures, args, env))
        print(row(phases[-1], None), flush=True)
    port = free_port()
    web = Process(server_argv(args.server, port, args.workers), env=env, log_path=logs / "web.log", name=args.server)
    name = f"{args.server} x{args.workers}"
    try:
        phases.append(
            run_phase(name, web, f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}/admin/login/", fixtures, args, env)
        )
    except Exception:
        print(web.tail(), file=sys.stderr)
        raise
    return phases


if __name__ == "__main__":
    main()
