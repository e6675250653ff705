"""Isolation under load: one user's flood against another user's `GET /api/jobs/<id>/`.

    .venv/bin/python -m devtools.benchmarks.isolation                     # daphne, as before
    .venv/bin/python -m devtools.benchmarks.isolation --server uvicorn --workers 2

Issue 12, goal 4: while one user floods the API with 20 parallel clients, another user's
`GET /api/jobs/<id>/` p99 <= 200 ms. The flood lists the flooding user's jobs in the biggest pages
the API serves (`?page_size=200`, over --jobs jobs of theirs), each client sending its next
request as soon as the last one is answered. The other user asks for one of their own jobs every
--every seconds, first alone (the baseline) and then during the flood. Both use API keys, as a
pipeline would. The flood's answers are counted by status (429 is the throttle answering, 0 a
time-out of --timeout seconds).

Isolation: a database of its own (created, migrated and dropped here) and private Redis prefixes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp

from devtools.benchmarks.fanout import SERVERS, server_argv
from devtools.benchmarks.progress_latency import (
    bench_database,
    clear_redis_keys,
    ms,
    percentile,
    product_version,
    system_environment,
)
from devtools.processes import Process, free_port

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/anime_bench_isolation"
GOAL_SECONDS = 0.2


@dataclass
class Timed:
    latencies: list[float]
    statuses: Counter[int]


async def timed_get(session: aiohttp.ClientSession, url: str, key: str, timed: Timed) -> None:
    """One GET as the key's user, its status (0: timed out) and its time added to `timed`."""
    started = time.monotonic()
    try:
        async with session.get(url, headers={"X-API-Key": key}) as response:
            await response.read()
            timed.statuses[response.status] += 1
    except TimeoutError:
        timed.statuses[0] += 1
    timed.latencies.append(time.monotonic() - started)


async def victim(session: aiohttp.ClientSession, url: str, key: str, seconds: float, every: float) -> Timed:
    timed = Timed([], Counter())
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        await timed_get(session, url, key, timed)
        await asyncio.sleep(max(0.0, every - (time.monotonic() - started)))
    return timed


async def flooder(session: aiohttp.ClientSession, url: str, key: str, stop: asyncio.Event, timed: Timed) -> None:
    while not stop.is_set():
        await timed_get(session, url, key, timed)


async def scenario(
    args: argparse.Namespace, base: str, keys: tuple[str, str], victim_job: str
) -> tuple[Timed, Timed, Timed]:
    flood_key, victim_key = keys
    one = f"{base}/api/jobs/{victim_job}/"
    pages = f"{base}/api/jobs/?page_size=200"
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        baseline = await victim(session, one, victim_key, args.seconds, args.every)
        stop, flood = asyncio.Event(), Timed([], Counter())
        flooders = [asyncio.create_task(flooder(session, pages, flood_key, stop, flood)) for _ in range(args.clients)]
        await asyncio.sleep(1.0)  # the flood is under way before the victim is timed
        loaded = await victim(session, one, victim_key, args.seconds, args.every)
        stop.set()
        await asyncio.gather(*flooders)
    return baseline, loaded, flood


def fixtures_make(jobs: int) -> tuple[tuple[str, str], str]:
    """A flooding user with `jobs` jobs of theirs and a victim with one: (their API keys), the victim's job."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from access.keys import api_key_create
    from jobs.models import Job, JobStatus

    users = get_user_model().objects
    flooder, other = users.create_user("isolation-flood"), users.create_user("isolation-victim")
    now = timezone.now()
    workflow = {"3": {"class_type": "KSampler", "inputs": {"steps": 30, "seed": 1}}}

    def job(user: Any, index: int) -> Job:
        created = now - timedelta(minutes=index)
        times = {"created_at": created, "started_at": created, "finished_at": created}
        return Job(
            user=user, backend="default", job_type="image", workflow=workflow, status=JobStatus.COMPLETED,
            name=f"shot {index}", progress=1.0, **times,
        )  # fmt: skip

    Job.objects.bulk_create([job(flooder, index) for index in range(jobs)], batch_size=1000)
    mine = Job.objects.create(user=other, backend="default", job_type="image", workflow=workflow)
    keys = (api_key_create(user=flooder, name="flood").key, api_key_create(user=other, name="victim").key)
    return keys, str(mine.id)


def line(name: str, timed: Timed) -> str:
    statuses = ", ".join(f"{count} x {status or 'time-out'}" for status, count in sorted(timed.statuses.items()))
    p50, p99 = percentile(timed.latencies, 0.5), percentile(timed.latencies, 0.99)
    return f"{name:<34} | {len(timed.latencies):>8} | {ms(p50):>8} | {ms(p99):>8} | {statuses}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.benchmarks.isolation", description=__doc__.split("\n")[0])
    parser.add_argument("--server", choices=SERVERS, default="daphne")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--clients", type=int, default=20, help="the flooding user's parallel clients")
    parser.add_argument("--jobs", type=int, default=5000, help="the flooding user's jobs")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each phase times the victim")
    parser.add_argument("--every", type=float, default=0.1, help="seconds between the victim's requests")
    parser.add_argument("--timeout", type=float, default=60.0, help="a request's time-out")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="PostgreSQL URL, or 'sqlite'")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work_dir = Path(tempfile.mkdtemp(prefix="bench-isolation-"))
    try:
        with bench_database(args.database_url, work_dir, keep=False) as database_url:
            env = system_environment("isolation", database_url, work_dir, LOG_LEVEL="WARNING")
            os.environ.update(env)
            try:
                results = measure(args, env, work_dir)
            finally:
                clear_redis_keys(env["REDIS_URL"], env["CELERY_KEY_PREFIX"])
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    baseline, loaded, flood = results
    print(
        "",
        f"goal: another user's GET /api/jobs/<id>/ p99 <= {GOAL_SECONDS * 1000:.0f} ms, {args.clients} flooding",
        f"{'':<34} | {'requests':>8} | {'p50 ms':>8} | {'p99 ms':>8} | answers",
        line("other user's GET, alone", baseline),
        line("other user's GET, during the flood", loaded),
        line(f"the flood (page_size=200, x{args.clients})", flood),
        sep="\n",
    )


def measure(args: argparse.Namespace, env: dict[str, str], work_dir: Path) -> tuple[Timed, Timed, Timed]:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections

    call_command("migrate", verbosity=0)
    rates: dict[str, str] = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]  # type: ignore[assignment]
    keys, victim_job = fixtures_make(args.jobs)
    connections.close_all()
    port = free_port()
    web = Process(
        server_argv(args.server, port, args.workers), env=env, log_path=work_dir / "web.log", name=args.server
    )
    print(
        f"{product_version()}; {args.server} x{args.workers}; database "
        f"{settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}; THROTTLE_USER "
        f"{rates['user']}; the flooding user has {args.jobs} jobs",
        flush=True,
    )
    with web.start():
        web.wait_for_url(f"http://127.0.0.1:{port}/admin/login/", statuses=range(200, 500), timeout=120)
        return asyncio.run(scenario(args, f"http://127.0.0.1:{port}", keys, victim_job))


if __name__ == "__main__":
    main()
