"""The real system's parts for the integration and browser tiers (a pytest plugin, listed in
tests/conftest.py's `pytest_plugins`): the ComfyUI simulator, a Celery GPU worker and daphne as real
processes, on the real Redis and the test database (PostgreSQL in CI).

Nothing here runs unless a test asks for it: the unit tier loads this module and starts nothing.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from django.db import connection

from access.access_log import web_server_argv
from devtools.processes import REPO, Process, free_port, running_processes
from devtools.simulator_process import SimulatorProcess

# Screenshots and tables the tests write for people to look at. Process logs go to pytest's temporary
# directories (one per run: concurrent runs never read each other's "ready" lines).
ARTIFACTS = REPO / "test-artifacts"
# Test runs share the machine's Redis with each other and with a running system: each run has its
# own Celery keys and channel-layer prefix (the processes it starts inherit them).
RUN_PREFIX = f"test-{os.getpid()}-"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """A failed test's report ends with what the processes running at that moment last wrote."""
    report = yield
    if report.failed:
        for process in running_processes():
            report.sections.append((f"last output of {process.name} ({process.log_path})", process.tail()))
    return report


@pytest.fixture(scope="session")
def redis_of_this_run() -> None:
    """This run's own corner of the shared Redis (Celery's keys, the channel layer's groups, the
    cache's rate-limit counters), here and in every process started after it."""
    from django.conf import settings
    from django.core.cache import cache

    from anime_production.celery import app

    os.environ["CELERY_KEY_PREFIX"] = RUN_PREFIX
    os.environ["CHANNEL_LAYER_PREFIX"] = f"{RUN_PREFIX}asgi"
    os.environ["CACHE_KEY_PREFIX"] = f"{RUN_PREFIX}cache"
    app.conf.broker_transport_options = {**app.conf.broker_transport_options, "global_keyprefix": RUN_PREFIX}
    layer_config = cast(dict[str, Any], settings.CHANNEL_LAYERS["default"]["CONFIG"])
    layer_config["prefix"] = f"{RUN_PREFIX}asgi"
    cast(dict[str, Any], settings.CACHES["default"])["KEY_PREFIX"] = f"{RUN_PREFIX}cache"
    cache.key_prefix = f"{RUN_PREFIX}cache"  # the cache this thread may have opened already


def database_url_for_subprocess() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] or ""
    if db.get("PASSWORD"):
        auth += f":{db['PASSWORD']}"
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class CeleryWorker:
    """A real `celery worker` serving one queue, as `make run` starts the GPU workers."""

    def __init__(
        self, *, queue: str, env: dict[str, str], log_path: Path, name: str | None = None, concurrency: int = 1
    ) -> None:
        self.queue = queue
        self.env = env
        self.log_path = log_path
        self.name = name or f"test-{queue}-{os.getpid()}"
        self.concurrency = concurrency
        self.media_root: Path | None = None  # where its outputs go, when a fixture chose it
        argv = [sys.executable, "-m", "celery", "-A", "anime_production", "worker", "-Q", queue]
        argv += ["--concurrency", str(concurrency), "--prefetch-multiplier", "1", "-n", f"{self.name}@%h"]
        argv += ["--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        self.process = Process(argv, env=env, log_path=log_path, name=f"celery worker {self.name}")

    def start(self) -> None:
        self.process.start().wait_for_line(" ready.", timeout=60)

    def stop(self) -> None:
        self.process.stop(grace=15)

    def kill(self) -> None:
        """SIGKILL the whole process group: the main process and its pool, nothing flushed."""
        self.process.kill()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.alive()

    def pool_children(self) -> list[int]:
        """The prefork pool's child processes (they run the tasks)."""
        if not self.alive():
            return []
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in text.split()]

    def kill_pool_child(self) -> int:
        (child,) = self.pool_children()
        os.kill(child, signal.SIGKILL)
        return child

    def log(self) -> str:
        return self.process.full_output()


@pytest.fixture(scope="session")
def simulator_session(redis_of_this_run, tmp_path_factory) -> Iterator[SimulatorProcess]:
    sim = SimulatorProcess(output_dir=tmp_path_factory.mktemp("sim-output"))
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture(scope="session")
def gpu_worker(
    redis_of_this_run, django_db_setup, django_db_blocker, simulator_session, tmp_path_factory
) -> Iterator[CeleryWorker]:
    media_root = tmp_path_factory.mktemp("media")
    with django_db_blocker.unblock():
        database_url = database_url_for_subprocess()
    env = dict(
        os.environ,
        DATABASE_URL=database_url,
        COMFYUI_URL=simulator_session.url,
        MEDIA_ROOT=str(media_root),
        TRACKER_RECONNECT_SECONDS="15",
        # This worker outlives each test and shares the database with the fleets some tests start
        # (their own backends): waiting after its last job, it looks at the queue and would take
        # their jobs. The fleets' workers wait as deployed; tests/integration/test_wake_wait.py.
        GPU_WORKER_LINGER_SECONDS="0",
        PYTHONUNBUFFERED="1",
    )
    logs = tmp_path_factory.mktemp("logs")
    worker = CeleryWorker(queue="gpu.default", env=env, log_path=logs / "gpu-worker.log")
    worker.media_root = media_root
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def live(gpu_worker, simulator_session, settings, transactional_db) -> Any:
    """Everything a job needs to run for real: simulator, GPU worker, committed database rows."""
    settings.MEDIA_ROOT = gpu_worker.media_root
    settings.COMFYUI_BACKENDS = {"default": simulator_session.url}
    return gpu_worker


@pytest.fixture(scope="session")
def web_server(django_db_setup, django_db_blocker, gpu_worker, simulator_session, tmp_path_factory) -> Iterator[str]:
    """daphne serving the project (HTTP and websockets) on the test database, as `make run` does.

    Same environment as the GPU worker: the jobs it enqueues reach that worker, the outputs the
    worker stores are the ones it serves, and the worker's broadcasts reach its websockets.
    """
    port = free_port()
    server = Process(
        web_server_argv("127.0.0.1", port),
        env=dict(gpu_worker.env),
        log_path=tmp_path_factory.mktemp("logs") / "web-server.log",
        name="daphne",
    )
    url = f"http://127.0.0.1:{port}"
    server.start().wait_for_url(f"{url}/admin/login/", timeout=60)
    yield url
    server.stop(grace=15)
