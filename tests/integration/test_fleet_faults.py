"""Faults of a fleet (issue 14 part 6) with the real services: the web server killed and started
again under 500 websocket subscribers, and two web processes beside two GPU workers for one backend.

The web servers are uvicorn, as `make run` and Docker start them (access.access_log.uvicorn_argv);
the subscribers are aiohttp websocket clients on one event loop in a thread of the test's process,
reconnecting with backoff as the web UI does, and following their job until the test stops them.
Figures are printed (run with -s) for the README's fault matrix.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests

from access.access_log import uvicorn_argv
from devtools.processes import Process, free_port
from fleet.backends import gpu_queue
from jobs.models import FINAL_STATUSES, Job
from tests.conftest import wait_for
from tests.factories import UserFactory, api_key_for
from tests.integration.test_job_lifecycle import sleep_workflow
from tests.integration.test_late_routing import fleet  # noqa: F401 (the fixture)
from tests.system import CeleryWorker

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SUBSCRIBERS = 500  # websocket clients across the restart
JOBS = 10  # each of a user of its own: 50 sockets a user, twice a minute, stay under WS_CONNECTS_PER_MINUTE
ORIGIN = "http://localhost:8000"  # a host in ALLOWED_HOSTS (AllowedHostsOriginValidator)
BACKOFF_FIRST, BACKOFF_MAX = 0.25, 4.0


# --- subscribers ----------------------------------------------------------------------------------


@dataclass(eq=False)
class Subscriber:
    """One websocket client of `ws/jobs/<id>/`: the newest state it has seen, when each of its
    snapshots arrived, when its socket dropped, and what refused it meanwhile."""

    url: str
    job_id: str
    key: str
    state: dict[str, Any] | None = None
    snapshots: list[float] = field(default_factory=list)  # time.time() of each snapshot
    drops: list[float] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)

    def seen(self, job: dict[str, Any] | None) -> None:
        if job is not None and (self.state is None or job["version"] >= self.state["version"]):
            self.state = job

    def final(self) -> bool:
        return self.state is not None and self.state["status"] in FINAL_STATUSES


async def _follow(session: aiohttp.ClientSession, sub: Subscriber) -> None:
    """Connect, read the snapshot and the updates, and reconnect with backoff (jittered, doubling
    to BACKOFF_MAX) whenever the socket drops or the server refuses, until cancelled."""
    delay = BACKOFF_FIRST
    headers = {"Origin": ORIGIN, "X-API-Key": sub.key}
    while True:
        try:
            ws = await session.ws_connect(f"{sub.url}/ws/jobs/{sub.job_id}/", headers=headers, max_msg_size=0)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            sub.refused[type(exc).__name__] += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, BACKOFF_MAX)
            continue
        try:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                body = message.json()
                if body["type"] == "snapshot":
                    sub.snapshots.append(time.time())
                    delay = BACKOFF_FIRST
                sub.seen(body.get("job"))
        except (aiohttp.ClientError, OSError):
            pass
        finally:
            await ws.close()
        if ws.close_code not in (None, 1000, 1001, 1006):
            sub.refused[f"close {ws.close_code}"] += 1
        sub.drops.append(time.time())
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))
        delay = min(delay * 2, BACKOFF_MAX)


class Subscribers:
    """Every subscriber on one event loop in a thread of its own."""

    def __init__(self, subscribers: list[Subscriber]) -> None:
        self.all = subscribers
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ws-subscribers", daemon=True)
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        self._thread.start()

        async def begin() -> None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=None)
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout)
            self._tasks = [asyncio.create_task(_follow(self._session, sub)) for sub in self.all]

        asyncio.run_coroutine_threadsafe(begin(), self._loop).result(30)

    def stop(self) -> None:
        async def end() -> None:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._session is not None:
                await self._session.close()

        asyncio.run_coroutine_threadsafe(end(), self._loop).result(60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@dataclass
class WebServer:
    process: Process
    url: str

    @classmethod
    def start(cls, env: dict[str, str], log: Path, *, workers: int, port: int | None = None) -> WebServer:
        port = port or free_port()
        process = Process(uvicorn_argv("127.0.0.1", port, workers), env=env, log_path=log, name=f"uvicorn :{port}")
        url = f"http://127.0.0.1:{port}"
        process.start().wait_for_url(f"{url}/admin/login/", timeout=90)
        return cls(process, url)

    @property
    def ws_url(self) -> str:
        return self.url.replace("http", "ws", 1)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


def submitted(web: str, key: str, workflow: dict[str, Any], **extra: Any) -> str:
    response = requests.post(
        f"{web}/api/jobs/",
        json={"workflow": workflow, "job_type": "image", **extra},
        headers={"X-API-Key": key},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def jobs_final(job_ids: list[str], timeout: float) -> dict[str, Job]:
    def done() -> dict[str, Job]:
        jobs = {str(job.pk): job for job in Job.objects.filter(pk__in=job_ids)}
        return jobs if all(job.status in FINAL_STATUSES for job in jobs.values()) else {}

    return wait_for(done, timeout=timeout, message="every job final")


def jobs_once_clients_caught_up(job_ids: list[str], subscribers: list[Subscriber], timeout: float) -> dict[str, Job]:
    """The jobs as they are once every client holds its job's latest state, or when `timeout` is
    up (the caller's assertions then say who does not). A job's state goes out once more after it
    ended, with its outputs' thumbnails (jobs.services.job_thumbnails_make), as a newer version."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = {str(job.pk): job for job in Job.objects.filter(pk__in=job_ids)}
        if time.monotonic() > deadline or all(
            sub.final() and sub.state is not None and sub.state["version"] == jobs[sub.job_id].version
            for sub in subscribers
        ):
            return jobs
        time.sleep(0.1)


# --- 1. the web server restarted under 500 subscribers ----------------------------------------------


@pytest.fixture
def restartable_web(live, gpu_worker, tmp_path) -> Iterator[dict[str, Any]]:
    holder: dict[str, Any] = {"env": dict(gpu_worker.env), "log": tmp_path / "web.log"}
    holder["server"] = WebServer.start(holder["env"], holder["log"], workers=2)
    try:
        yield holder
    finally:
        holder["server"].process.stop(grace=15)


def test_web_restart_every_subscriber_back_with_its_job_s_final_state(restartable_web):
    server: WebServer = restartable_web["server"]
    owners = [UserFactory.create() for _ in range(JOBS)]
    keys = [api_key_for(owner) for owner in owners]
    # Long enough that jobs run and wait across the restart, and some end while the server is down.
    job_ids = [submitted(server.url, key, sleep_workflow(2.5, f"restart-{i}")) for i, key in enumerate(keys)]
    subscribers = [Subscriber(server.ws_url, job_ids[i % JOBS], keys[i % JOBS]) for i in range(SUBSCRIBERS)]
    clients = Subscribers(subscribers)
    clients.start()
    try:
        wait_for(lambda: all(sub.snapshots for sub in subscribers), timeout=60, message="every snapshot")
        assert Job.objects.filter(pk__in=job_ids).exclude(status__in=FINAL_STATUSES).exists(), "too late"

        killed_at = time.time()
        server.process.kill()  # SIGKILL to uvicorn's master and its workers, nothing flushed
        started = time.monotonic()
        restartable_web["server"] = server = WebServer.start(
            restartable_web["env"], restartable_web["log"], workers=2, port=server.port
        )
        serving_after = time.monotonic() - started
        ended_while_down = Job.objects.filter(pk__in=job_ids, status__in=FINAL_STATUSES).count()

        wait_for(
            lambda: all(sub.snapshots[-1] > killed_at for sub in subscribers),
            timeout=60,
            message="every subscriber back",
        )
        jobs_final(job_ids, timeout=90)
        jobs = jobs_once_clients_caught_up(job_ids, subscribers, timeout=30)
    finally:
        clients.stop()

    assert {job.status for job in jobs.values()} == {"completed"}
    wrong = [
        (sub.job_id, sub.state and (sub.state["status"], sub.state["version"]), jobs[sub.job_id].version)
        for sub in subscribers
        if sub.state is None or sub.state["status"] != "completed" or sub.state["version"] != jobs[sub.job_id].version
    ]
    assert not wrong, f"{len(wrong)} clients without their job's true final state: {wrong[:5]}"
    assert all(sub.drops and sub.drops[0] >= killed_at for sub in subscribers), "every socket dropped at the kill"

    back = [next(at for at in sub.snapshots if at > killed_at) for sub in subscribers]
    waits = [
        next(at for at in sub.snapshots if at > killed_at) - next(d for d in sub.drops if d >= killed_at)
        for sub in subscribers
    ]
    refused: Counter[str] = sum((sub.refused for sub in subscribers), Counter())
    print(
        f"\n[web restart] {SUBSCRIBERS} subscribers over {JOBS} jobs; uvicorn x2 SIGKILLed and serving again after"
        f" {serving_after:.1f} s; all back {max(back) - killed_at:.1f} s after the kill (first"
        f" {min(back) - killed_at:.1f} s); slowest client's wait {max(waits):.1f} s; {ended_while_down} jobs final"
        f" before the server answered; refused attempts meanwhile {dict(refused)}; every client ended with its"
        " job's completed state"
    )


# --- 2. two web processes and two GPU workers for one backend -----------------------------------------


def test_two_web_processes_and_two_gpu_workers_one_prompt_per_attempt(fleet, tmp_path):  # noqa: F811
    twin = CeleryWorker(
        queue=gpu_queue("route-a"), env=fleet.env, log_path=tmp_path / "twin.log", name="test-route-a-twin"
    )
    twin.start()
    fleet.workers["route-a"].append(twin)
    for worker in fleet.workers["route-b"]:
        worker.stop()  # every job to route-a's two workers
    webs = [WebServer.start(fleet.env, tmp_path / f"web-{i}.log", workers=1) for i in range(2)]
    try:
        key = api_key_for(UserFactory.create())
        job_ids = [submitted(webs[i % 2].url, key, sleep_workflow(0.3, f"twins-{i}")) for i in range(8)]
        # Each job followed on the web process it was not submitted through, and on its own.
        subscribers = [Subscriber(webs[(i + j) % 2].ws_url, job_id, key) for i, job_id in enumerate(job_ids)
                       for j in range(2)]  # fmt: skip
        clients = Subscribers(subscribers)
        clients.start()
        try:
            jobs_final(job_ids, timeout=90)
            jobs = jobs_once_clients_caught_up(job_ids, subscribers, timeout=30)
        finally:
            clients.stop()
    finally:
        for web in webs:
            web.process.stop(grace=15)

    assert {job.status for job in jobs.values()} == {"completed"}
    assert {job.backend for job in jobs.values()} == {"route-a"}
    attempts = {job_id: job.attempts.count() for job_id, job in jobs.items()}
    assert set(attempts.values()) == {1}, attempts
    prompts = fleet.prompt_ids("route-a")
    assert sorted(prompts) == sorted(job_ids), "each job's prompt once, no other"
    assert fleet.prompt_ids("route-b") == []
    for sub in subscribers:
        assert sub.state is not None and sub.state["status"] == "completed", (sub.url, sub.job_id, sub.state)
        assert sub.state["version"] == jobs[sub.job_id].version
    print(f"\n[two webs, two workers] {len(job_ids)} jobs through 2 uvicorn processes, {len(prompts)} prompts")
