"""Shared fixtures. Integration fixtures start real processes: the ComfyUI simulator and a Celery
GPU worker, on the real Redis and the test database (PostgreSQL in CI)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.factories import UserFactory

pytest_plugins = ["tests.simulator_process"]

# Test runs share the machine's Redis with each other and with a running system: give this run
# its own Celery keys and channel-layer prefix (the worker processes inherit the environment).
RUN_PREFIX = f"test-{os.getpid()}-"
os.environ["CELERY_KEY_PREFIX"] = RUN_PREFIX
os.environ["CHANNEL_LAYER_PREFIX"] = f"{RUN_PREFIX}asgi"


@pytest.fixture(scope="session", autouse=True)
def _isolated_redis_keys() -> None:
    from django.conf import settings

    from anime_production.celery import app

    app.conf.broker_transport_options = {**app.conf.broker_transport_options, "global_keyprefix": RUN_PREFIX}
    settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = f"{RUN_PREFIX}asgi"


REPO = Path(__file__).resolve().parents[1]
TRACES_DIR = REPO / "tests" / "data" / "comfyui-traces"
ARTIFACTS = REPO / "test-artifacts"


def load_trace(name: str) -> list[dict[str, Any]]:
    with open(TRACES_DIR / name) as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def api(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def database_url_for_subprocess() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] or ""
    if db.get("PASSWORD"):
        auth += f":{db['PASSWORD']}"
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class WorkerProcess:
    """A real Celery worker serving one GPU queue, as `make run` starts it."""

    def __init__(self, *, queue: str, env: dict[str, str], log_path: Path) -> None:
        self.queue = queue
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "anime_production",
                "worker",
                "-Q",
                self.queue,
                "--concurrency",
                "1",
                "--prefetch-multiplier",
                "1",
                "-n",
                f"test-{self.queue}-{os.getpid()}@%h",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"celery worker exited: {self.log_path.read_text()[-3000:]}")
            if " ready." in self.log_path.read_text():
                return
            time.sleep(0.2)
        raise RuntimeError(f"celery worker not ready in 60 s: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text()


@pytest.fixture(scope="session")
def simulator_session(tmp_path_factory) -> Iterator[Any]:
    from tests.simulator_process import SimulatorProcess

    sim = SimulatorProcess(output_dir=tmp_path_factory.mktemp("sim-output"))
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture(scope="session")
def gpu_worker(django_db_setup, django_db_blocker, simulator_session, tmp_path_factory) -> Iterator[WorkerProcess]:
    media_root = tmp_path_factory.mktemp("media")
    with django_db_blocker.unblock():
        database_url = database_url_for_subprocess()
    env = dict(
        os.environ,
        DATABASE_URL=database_url,
        COMFYUI_URL=simulator_session.url,
        MEDIA_ROOT=str(media_root),
        TRACKER_RECONNECT_SECONDS="15",
        PYTHONUNBUFFERED="1",
    )
    ARTIFACTS.mkdir(exist_ok=True)
    worker = WorkerProcess(queue="gpu.default", env=env, log_path=ARTIFACTS / "gpu-worker.log")
    worker.media_root = media_root
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def live(gpu_worker, simulator_session, settings, transactional_db):
    """Everything a job needs to run for real: simulator, GPU worker, committed database rows."""
    settings.MEDIA_ROOT = gpu_worker.media_root
    settings.COMFYUI_BACKENDS = {"default": simulator_session.url}
    return gpu_worker


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


@pytest.fixture(scope="session")
def web_server(django_db_setup, django_db_blocker, gpu_worker, simulator_session) -> Iterator[str]:
    """daphne serving the project (HTTP and websockets) on the test database, as `make run` does.

    Same environment as the GPU worker: the jobs it enqueues reach that worker, the outputs the
    worker stores are the ones it serves, and the worker's broadcasts reach its websockets.
    """
    import requests

    from tests.simulator_process import free_port

    port = free_port()
    env = dict(gpu_worker.env)
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / "web-server.log"
    daphne = Path(sys.executable).parent / "daphne"
    process = subprocess.Popen(
        [str(daphne), "-b", "127.0.0.1", "-p", str(port), "anime_production.asgi:application"],
        cwd=REPO,
        env=env,
        stdout=open(log_path, "a"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"daphne exited: {log_path.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/admin/login/", timeout=2).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"daphne not serving in 60 s: {log_path.read_text()[-3000:]}")
        time.sleep(0.2)
    yield url
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
