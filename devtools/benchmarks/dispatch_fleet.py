"""Late routing across a fleet: how long a free GPU waits for its next job, with 10 to 10,000 jobs of
20 users waiting for 5 backends, and what dispatch and a submit cost (issue 14 part 2, issue 12 goal 1).

    .venv/bin/python -m devtools.benchmarks.dispatch_fleet --database-url postgres://postgres@127.0.0.1:5432/routing_bench

It runs the system as production does: 5 simulator processes as backends b1..b5, a GPU worker for
each (`manage.py run_worker gpu bN`), the default worker, uvicorn serving the API as `make run` does; the database is
migrated, with whatever history it holds (it says how much). For each queue length W:

- the queue is filled with W runnable jobs of `--seconds` (EmptyImage -> TestSleep -> SaveImage) of 20
  users (rows with their fair-share turns, as job_create makes them; then the backends are woken),
  and kept at W while the backends work (rows again: a POST through this busy machine is slower than
  five backends taking); meanwhile `--posts` jobs are posted through uvicorn, two a second (their
  round trips are the POST figure);
- (a) a free GPU's wait: per backend, from ComfyUI ending one prompt to starting the next (their
  history's execution_success and execution_start timestamps), over `--dispatches` jobs. The next
  prompt may be in ComfyUI's queue already (put in ahead, HANDOVER_AHEAD_SECONDS before the running
  one was expected to end: it says how many were), or come after the end;
- (b) queries of one take (jobs.dispatch.job_take_next, in this process, rolled back);
- (c) queries of one `POST /api/jobs/` (Django's test client, in this process).

Before the first W, one job per backend (not measured) teaches history the benchmark's nodes, as a
studio's history knows its own. Then, on an idle fleet, (d) created -> prompt received for
`--idle-jobs` jobs posted one at a time.
The jobs it makes are deleted at the end; its Redis keys are its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import aiohttp

from devtools.benchmarks.dispatch import history_size, ms, orm, verdict
from devtools.benchmarks.progress_latency import (
    Child,
    clear_redis_keys,
    percentile,
    product_version,
    sleep_workflow,
    stop_all,
    system_environment,
    wait_ready,
    web_server,
)
from devtools.simulator_process import SimulatorProcess, free_port

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/routing_bench"
BACKENDS = [f"b{index}" for index in range(1, 6)]
PROBE = "b0"  # configured, served by no worker: where this process measures a take's queries
USERS = 20
GOAL_MS = 50.0
POST_QUERIES_GOAL = 20

_colours = iter(range(0x100000, 0xFFFFFF))


@dataclass
class Window:
    waiting: int
    free_waits: list[float] = field(default_factory=list)
    put_in_ahead: int = 0  # of those, next prompts ComfyUI had in its queue before the last one ended
    posts: list[float] = field(default_factory=list)
    take_queries: int = 0
    post_queries: int = 0
    cold_post_queries: int = 0


# --- in this process: the queue, its users, the query counts -------------------------------------


def bench_users() -> list[tuple[Any, str]]:
    from django.contrib.auth import get_user_model

    from access.keys import api_key_create

    run = uuid.uuid4().hex[:6]
    made = []
    for index in range(USERS):
        user = get_user_model().objects.create_user(f"bench-fleet-{run}-{index}")
        made.append((user, api_key_create(user=user, name="fleet benchmark").key))
    return made


def queue_fill(users: list[Any], count: int, seconds: float) -> None:
    """`count` more waiting jobs, round the users: each user's k-th job gets turn k past the front,
    as jobs.fair_share gives it at submit. Rows made in bulk: 10,000 submits would take minutes."""
    from django.db.models import Min

    from jobs import fit
    from jobs.eta import workflow_fingerprint
    from jobs.models import Job, JobStatus

    front = Job.objects.filter(status=JobStatus.QUEUED, priority=5).aggregate(m=Min("fair_turn"))["m"] or 0
    rows = []
    for index in range(count):
        workflow = sleep_workflow(seconds, next(_colours))
        job_id = uuid.uuid4()
        rows.append(
            Job(
                id=job_id,
                prompt_id=job_id,  # as Job.save gives it: bulk_create does not call save
                user=users[index % len(users)],
                workflow=workflow,
                job_type="other",
                fingerprint=workflow_fingerprint(workflow),
                needs=fit.workflow_needs(workflow).stored(),
                fair_turn=front + 1_000_000 + index // len(users),  # behind every job already waiting
            )
        )
    Job.objects.bulk_create(rows, batch_size=1000)


def backends_wake_idle() -> None:
    """A backend that found the queue empty for a moment has stopped: wake it (one pending wake each)."""
    from jobs.wake import backends_wake

    backends_wake(BACKENDS)


def ran_since(since: float) -> int:
    from datetime import UTC, datetime

    from jobs.models import Job, JobStatus

    started = datetime.fromtimestamp(since, tz=UTC)
    return Job.objects.filter(status=JobStatus.COMPLETED, submitted_at__gte=started).count()


def probe_in_service(in_service: bool) -> None:
    from fleet.backends import backend_set_draining

    backend_set_draining(PROBE, not in_service)


def backends_wake_all() -> None:
    from jobs.wake import backends_wake

    backends_wake(BACKENDS, force=True)


def waiting_count() -> int:
    from jobs.models import Job, JobStatus

    return Job.objects.filter(status=JobStatus.QUEUED).count()


def take_queries() -> int:
    """Queries of one take by a free backend, rolled back (the job stays waiting). Not counted: the
    read of a young job's workflow when another backend happens to be free at that instant (a speed
    comparison, jobs.dispatch._faster_elsewhere), which depends on the moment, not on W."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from jobs import dispatch

    class Undo(Exception):
        pass

    try:
        with transaction.atomic(), CaptureQueriesContext(connection) as queries:
            taken = dispatch.job_take_next(PROBE)
            if taken is None:
                raise RuntimeError("the probe backend took nothing")
            raise Undo
    except Undo:
        pass
    comparisons = [q for q in queries if q["sql"].startswith('SELECT "jobs_job"."id", "jobs_job"."workflow" FROM')]
    return len(queries) - len(comparisons)


def post_queries(user: Any) -> int:
    from unittest import mock

    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    body = {"workflow": sleep_workflow(0.1, next(_colours)), "job_type": "other"}
    with mock.patch("celery.canvas.Signature.apply_async"), CaptureQueriesContext(connection) as queries:
        response = client.post("/api/jobs/", data=json.dumps(body), content_type="application/json", secure=True)
    if response.status_code != 201:
        raise RuntimeError(f"POST /api/jobs/ answered {response.status_code}: {response.content[:300]!r}")
    return len(queries)


def queue_empty() -> None:
    """Cancel what still waits (the window is over) without announcing each."""
    from jobs.models import Job, JobStatus

    Job.objects.filter(status=JobStatus.QUEUED).update(status=JobStatus.CANCELLED)


def active_count() -> int:
    from jobs.models import ACTIVE_STATUSES, Job

    return Job.objects.filter(status__in=ACTIVE_STATUSES).count()


def created_at_of(job_ids: list[str]) -> dict[str, float]:
    from jobs.models import Job

    return {
        str(pk): created.timestamp()
        for pk, created in Job.objects.filter(pk__in=job_ids).values_list("pk", "created_at")
    }


def status_of(job_id: str) -> str:
    from jobs.models import Job

    return Job.objects.filter(pk=job_id).values_list("status", flat=True).get()


# --- the simulators: when each prompt came and ended -------------------------------------------------


async def prompts_of(session: aiohttp.ClientSession, sim: SimulatorProcess) -> list[Prompt]:
    """Every prompt the simulator took, in the order received."""
    async with session.get(sim.url + "/sim/submissions") as response:
        submissions = [entry for entry in await response.json() if entry["accepted"]]
    async with session.get(sim.url + "/history?max_items=100000") as response:
        history = await response.json()
    prompts = []
    for entry in sorted(submissions, key=lambda entry: entry["received_at"]):
        messages = history.get(entry["prompt_id"], {}).get("status", {}).get("messages", [])
        at = {event: data["timestamp"] / 1000 for event, data in messages}
        prompts.append(
            Prompt(
                entry["prompt_id"], entry["received_at"] / 1000, at.get("execution_start"), at.get("execution_success")
            )
        )
    return prompts


@dataclass
class Prompt:
    prompt_id: str
    received: float
    started: float | None  # ComfyUI's execution_start
    ended: float | None  # its execution_success


def free_waits(prompts: list[Prompt], since: float) -> list[float]:
    """One backend's GPU waits: from ComfyUI ending a prompt to starting the next (the next may have
    been waiting in its queue already, put in ahead; or it came after, and the GPU was free meanwhile)."""
    waits = []
    for done, following in pairwise(prompts):
        if done.ended is not None and done.ended >= since and following.started is not None:
            waits.append(following.started - done.ended)
    return waits


# --- a window at one queue length -------------------------------------------------------------------


async def post_job(session: aiohttp.ClientSession, base_url: str, key: str, seconds: float) -> tuple[str, float]:
    body = {"workflow": sleep_workflow(seconds, next(_colours)), "job_type": "other"}
    began = time.perf_counter()
    async with session.post(f"{base_url}/api/jobs/", json=body, headers={"X-API-Key": key}) as response:
        if response.status != 201:
            raise RuntimeError(f"POST /api/jobs/ answered {response.status}: {(await response.text())[:300]}")
        job = await response.json()
    return job["id"], time.perf_counter() - began


async def window(
    args: argparse.Namespace, sims: list[SimulatorProcess], base_url: str, users: list[tuple[Any, str]], waiting: int
) -> Window:
    result = Window(waiting)
    await orm(queue_fill, [user for user, _ in users], waiting, args.seconds)
    # Before the backends are woken: the queue is W long, every backend free.
    await orm(probe_in_service, True)
    await orm(take_queries)  # the first in a process also reads the ETA's history (once a minute)
    result.take_queries = await orm(take_queries)
    await orm(probe_in_service, False)  # the real backends must not leave jobs to it
    result.cold_post_queries = await orm(post_queries, users[0][0])  # may read the ETA's history (once a minute)
    result.post_queries = await orm(post_queries, users[0][0])
    await orm(backends_wake_all)
    since = time.time()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        deadline = time.monotonic() + args.window_seconds
        next_post = time.monotonic()
        while time.monotonic() < deadline:
            # Kept W long by rows (a POST is too slow to keep up with five backends on this machine)...
            missing = waiting - await orm(waiting_count)
            if missing > 0:
                await orm(queue_fill, [user for user, _ in users], missing, args.seconds)
                await orm(backends_wake_idle)
            # ... while some jobs come through the API, for the POST's round trip at this W.
            if len(result.posts) < args.posts and time.monotonic() >= next_post:
                _, seconds = await post_job(session, base_url, users[len(result.posts) % USERS][1], args.seconds)
                result.posts.append(seconds)
                next_post = time.monotonic() + 0.5
            if len(result.posts) >= args.posts and await orm(ran_since, since) >= args.dispatches:
                break
            await asyncio.sleep(0.05)
        await orm(queue_empty)
        while await orm(active_count):
            await asyncio.sleep(0.1)
        for sim in sims:
            prompts = await prompts_of(session, sim)
            result.free_waits += free_waits(prompts, since)
            result.put_in_ahead += sum(
                1
                for done, following in pairwise(prompts)
                if done.ended is not None and done.ended >= since and following.received < done.ended
            )
    return result


async def teach_history(args: argparse.Namespace, users: list[tuple[Any, str]]) -> None:
    """One job per backend, not measured, so history knows the benchmark's nodes as a studio's does
    (a fresh database otherwise handicaps the first window: nothing is put in ahead before history
    knows every node left)."""
    await orm(queue_fill, [user for user, _ in users], len(BACKENDS), args.seconds)
    await orm(backends_wake_all)
    while await orm(waiting_count) or await orm(active_count):
        await asyncio.sleep(0.1)


async def idle_fleet(args: argparse.Namespace, sims: list[SimulatorProcess], base_url: str, key: str) -> list[float]:
    """created_at -> prompt received of jobs posted one at a time to a fleet with nothing to do."""
    ids = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for _ in range(args.idle_jobs):
            job_id, _ = await post_job(session, base_url, key, 0.1)
            ids.append(job_id)
            while await orm(status_of, job_id) not in ("completed", "failed", "cancelled"):
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)  # the worker back from its empty take: the fleet is idle again
        received = {}
        for sim in sims:
            received.update({prompt.prompt_id: prompt.received for prompt in await prompts_of(session, sim)})
    created = await orm(created_at_of, ids)
    return [received[job_id] - created[job_id] for job_id in ids if job_id in received]


# --- the run --------------------------------------------------------------------------------------


def report(windows: list[Window], idle: list[float], post_counts: list[int]) -> str:
    lines = [f"{'figure':<60} | {'measured':>26} | {'goal':>16} |"]
    for win in windows:
        w50, w99 = percentile(win.free_waits, 0.5), percentile(win.free_waits, 0.99)
        p50, p99 = percentile(win.posts, 0.5), percentile(win.posts, 0.99)
        lines += [
            f"{f'(a) free GPU -> next prompt, W={win.waiting:,} ({len(win.free_waits)} waits, p50/p99)':<60} | "
            f"{f'{ms(w50)} / {ms(w99)} ms':>26} | {f'p99 <= {GOAL_MS:g} ms':>16} | {verdict(w99 * 1000 <= GOAL_MS)}",
            f"{f'    of which the next prompt was in ComfyUI ahead, W={win.waiting:,}':<60} | {win.put_in_ahead:>26} | "
            f"{'':>16} |",
            f"{f'(b) queries of one take, W={win.waiting:,}':<60} | {win.take_queries:>26} | {'same at any W':>16} |",
            f"{f'(c) POST /api/jobs/ through HTTP, W={win.waiting:,} (p50/p99)':<60} | "
            f"{f'{ms(p50)} / {ms(p99)} ms':>26} | {f'p99 <= {GOAL_MS:g} ms':>16} | {verdict(p99 * 1000 <= GOAL_MS)}",
            f"{f'(c) POST /api/jobs/ queries (the one before it), W={win.waiting:,}':<60} | "
            f"{f'{win.post_queries} ({win.cold_post_queries})':>26} | "
            f"{f'<= {POST_QUERIES_GOAL}':>16} | {verdict(win.post_queries <= POST_QUERIES_GOAL)}",
        ]
    if idle:
        i50, i99 = percentile(idle, 0.5), percentile(idle, 0.99)
        lines.append(
            f"{f'(d) idle fleet: created -> prompt received ({len(idle)} jobs, p50/p99)':<60} | "
            f"{f'{ms(i50)} / {ms(i99)} ms':>26} | {f'p99 <= {GOAL_MS:g} ms':>16} | {verdict(i99 * 1000 <= GOAL_MS)}"
        )
    takes = {win.take_queries for win in windows}
    lines.append(f"    take queries at every W: {sorted(takes)} ({'constant' if len(takes) == 1 else 'NOT constant'})")
    return "\n".join(lines)


def run(args: argparse.Namespace, sims: list[SimulatorProcess], env: dict[str, str], log_dir: Path) -> None:
    os.environ.update(env)
    import django

    django.setup()
    from django.db import connections

    from jobs.models import Job

    jobs, timings = history_size()
    users = bench_users()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    web = web_server(port, env, log_dir, args.web_workers)
    workers = [
        Child(
            f"gpu worker {name}",
            [sys.executable, "manage.py", "run_worker", "gpu", name],
            env,
            log_dir / f"{name}.log",
            " ready.",
        )
        for name in BACKENDS
    ]
    # The default worker announces the queue's moves (jobs.services.queue_announce): its CPU is this
    # machine's too.
    workers.append(
        Child(
            "default worker",
            [sys.executable, "manage.py", "run_worker", "default"],
            env,
            log_dir / "default.log",
            " ready.",
        )
    )
    try:
        wait_ready([web, *workers])
        print(
            f"{product_version()}; history ~{jobs:,} jobs, ~{timings:,} node timings; {len(BACKENDS)} backends, "
            f"{USERS} users, {args.seconds:g}-s jobs; {os.cpu_count()} cores, shared; logs in {log_dir}",
            flush=True,
        )
        asyncio.run(teach_history(args, users))
        windows = []
        for waiting in args.waiting:
            windows.append(asyncio.run(window(args, sims, base_url, users, waiting)))
            win = windows[-1]
            print(
                f"  W={waiting:,}: free GPU -> prompt p50 {ms(percentile(win.free_waits, 0.5))} p99 "
                f"{ms(percentile(win.free_waits, 0.99))} ms over {len(win.free_waits)} waits; POST p99 "
                f"{ms(percentile(win.posts, 0.99))} ms; take {win.take_queries} q, POST {win.post_queries} q",
                flush=True,
            )
            connections.close_all()
        idle = asyncio.run(idle_fleet(args, sims, base_url, users[0][1])) if args.idle_jobs else []
        print()
        print(report(windows, idle, []))
    finally:
        stop_all([*workers, web])
        Job.objects.filter(user__in=[user for user, _ in users]).delete()
        for user, _ in users:
            user.delete()
        connections.close_all()


def counts(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.benchmarks.dispatch_fleet", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="a migrated PostgreSQL database")
    parser.add_argument("--waiting", type=counts, default=[10, 1000, 10000], help="queue lengths")
    parser.add_argument("--seconds", type=float, default=0.3, help="how long each job's TestSleep runs")
    parser.add_argument("--dispatches", type=int, default=100, help="jobs run per queue length (at least)")
    parser.add_argument("--web-workers", type=int, default=2, help="uvicorn processes, as run_system starts them")
    parser.add_argument("--posts", type=int, default=20, help="jobs posted through HTTP per queue length")
    parser.add_argument("--window-seconds", type=float, default=120.0, help="at most this long per queue length")
    parser.add_argument("--idle-jobs", type=int, default=30, help="jobs posted one at a time to an idle fleet")
    parser.add_argument(
        "--handover-ahead-seconds",
        help="the GPU workers' HANDOVER_AHEAD_SECONDS (default: the product's; 0: no prompt before ComfyUI is done)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work_dir = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    log_dir = work_dir / "logs"
    log_dir.mkdir()
    sims = [
        SimulatorProcess(output_dir=work_dir / name / "output", extra_args=["--log-level", "WARNING"])
        for name in BACKENDS
    ]
    env: dict[str, str] = {}
    try:
        for sim in sims:
            sim.start()
        backends = ",".join(f"{name}={sim.url}" for name, sim in zip(BACKENDS, sims, strict=True))
        env = system_environment(
            "fleet",
            args.database_url,
            work_dir,
            COMFYUI_BACKENDS=f"{backends},{PROBE}={sims[0].url}",
            COMFYUI_DEFAULT_BACKEND=BACKENDS[0],
            THROTTLE_SUBMIT="100000/min",
            THROTTLE_USER="100000/min",
        )
        if args.handover_ahead_seconds is not None:
            env["HANDOVER_AHEAD_SECONDS"] = args.handover_ahead_seconds
        run(args, sims, env, log_dir)
    finally:
        for sim in sims:
            sim.stop()
        if env:
            clear_redis_keys(env.get("REDIS_URL", "redis://127.0.0.1:6379/0"), env["CELERY_KEY_PREFIX"])
        if not args.keep:
            shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
