"""/metrics with real processes: counters raised in other processes (and other containers' directories)
are summed by one scrape of the web server, and a real GPU worker running a job on the simulator moves
the run and wait histograms, the tracker's reconnect counter, progress writes and broadcasts."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from access.access_log import uvicorn_argv
from devtools.processes import REPO, Process, free_port
from jobs.models import Job, JobStatus
from tests.conftest import wait_for
from tests.factories import SLEEP_WORKFLOW
from tests.integration.fault_tools import ComfyProxy
from tests.system import CeleryWorker, database_url_for_subprocess

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TOKEN = "integration-metrics-token-0123456789abcdef"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metrics_env(root: Path, process_dir: str, **extra: str) -> dict[str, str]:
    directory = root / process_dir
    directory.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        DATABASE_URL=database_url_for_subprocess(),
        DJANGO_SETTINGS_MODULE="anime_production.settings",
        METRICS_TOKEN=TOKEN,
        METRICS_CACHE_SECONDS="0",
        PROMETHEUS_MULTIPROC_DIR=str(directory),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    if "COMFYUI_BACKENDS" in extra:
        env.pop("COMFYUI_URL", None)  # else settings add a "default" backend beside the ones named
    return env


def web_server(root: Path, logs: Path, **extra: str) -> tuple[Process, str]:
    """uvicorn with two web processes, as `make run` starts it, summing every directory under `root`."""
    port = free_port()
    env = metrics_env(root, "web", METRICS_MULTIPROC_ROOT=str(root), **extra)
    server = Process(uvicorn_argv("127.0.0.1", port, 2), env=env, log_path=logs / "web.log", name="uvicorn x2")
    url = f"http://127.0.0.1:{port}"
    server.start().wait_for_url(f"{url}/admin/login/", timeout=90)
    return server, url


def scrape(url: str) -> Samples:
    response = requests.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert response.status_code == 200, response.text
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def count_reconnects_in_a_process(env: dict[str, str], times: int) -> None:
    """A Django process (as a worker is) that counts `times` dropped sockets through jobs.instruments, then exits."""
    code = (
        "import django; django.setup()\n"
        "from jobs import instruments\n"
        f"for _ in range({times}): instruments.tracker_reconnected('dropped')\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, check=True, timeout=120)


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


def test_one_scrape_sums_the_counters_of_every_process(tmp_path, logs):
    root = tmp_path / "metrics"
    server, url = web_server(root, logs)
    try:
        assert requests.get(f"{url}/metrics", timeout=30).status_code == 401
        before = value(scrape(url), "anime_tracker_reconnects_total", reason="dropped")
        # Two processes in one directory (one host), a third in a directory of its own (another
        # container on the shared volume): all three have exited before the scrape.
        count_reconnects_in_a_process(metrics_env(root, "worker-host-a"), 3)
        count_reconnects_in_a_process(metrics_env(root, "worker-host-a"), 4)
        count_reconnects_in_a_process(metrics_env(root, "worker-host-b"), 5)
        # A container given only the root: the metrics app gives it a directory named after its host.
        only_root = metrics_env(root, "unused", METRICS_MULTIPROC_ROOT=str(root))
        del only_root["PROMETHEUS_MULTIPROC_DIR"]
        count_reconnects_in_a_process(only_root, 6)
        assert list((root / socket.gethostname()).glob("counter_*.db")), "no directory of its own under the root"
        # Each scrape reaches one of the two web processes; every one of them sees the sum.
        for _ in range(4):
            assert value(scrape(url), "anime_tracker_reconnects_total", reason="dropped") == before + 18
    finally:
        server.stop(grace=10)


def test_metrics_serve_offers_a_gpu_hosts_counters(tmp_path, logs):
    root = tmp_path / "gpu-host"
    count_reconnects_in_a_process(metrics_env(root, "."), 2)
    port = free_port()
    argv = [sys.executable, "manage.py", "metrics_serve", "--port", str(port)]
    server = Process(argv, env=metrics_env(root, "."), log_path=logs / "metrics-serve.log", name="metrics_serve")
    url = f"http://127.0.0.1:{port}"
    try:
        server.start().wait_for_line("serving the counters", timeout=60)
        wait_for(lambda: _answers(url), timeout=20, message="metrics_serve to answer")
        assert requests.get(f"{url}/metrics", timeout=10).status_code == 401
        samples = scrape(url)
        assert value(samples, "anime_tracker_reconnects_total", reason="dropped") == 2
        assert not any(name == "anime_queue_depth" for name, _ in samples), "the database's part is the web's"
    finally:
        server.stop(grace=10)


def _answers(url: str) -> bool:
    try:
        requests.get(f"{url}/metrics", timeout=2)
    except requests.RequestException:
        return False
    return True


@pytest.fixture
def proxied_simulator(simulator_session) -> Iterator[ComfyProxy]:
    proxy = ComfyProxy(simulator_session.url).start()
    yield proxy
    proxy.stop()


def test_a_real_job_moves_the_histograms_and_the_reconnect_counter(
    redis_of_this_run, proxied_simulator, settings, api, tmp_path, logs
):
    backend = f"metrics{os.getpid()}"
    backends = f"{backend}={proxied_simulator.url}"
    settings.COMFYUI_BACKENDS = {backend: proxied_simulator.url}
    settings.COMFYUI_DEFAULT_BACKEND = backend
    settings.MEDIA_ROOT = tmp_path / "media"
    root = tmp_path / "metrics"
    common = {"COMFYUI_BACKENDS": backends, "COMFYUI_DEFAULT_BACKEND": backend, "MEDIA_ROOT": str(tmp_path / "media")}
    worker_env = metrics_env(root, "gpu-worker", TRACKER_RECONNECT_SECONDS="15", **common)
    worker = CeleryWorker(queue=f"gpu.{backend}", env=worker_env, log_path=logs / "gpu-worker.log")
    worker.start()
    server = None
    try:
        server, url = web_server(root, logs, **common)
        labels = {"backend": backend, "job_type": "image"}
        before = scrape(url)

        workflow = copy.deepcopy(SLEEP_WORKFLOW)
        workflow["2"]["inputs"]["seconds"] = 4.0
        workflow["1"]["inputs"]["color"] = time.monotonic_ns() % 16_777_215  # no cache hit from another job
        response = api.post("/api/jobs/", {"workflow": workflow, "job_type": "image"}, format="json")
        assert response.status_code == 201, response.content
        job_id = uuid.UUID(response.json()["id"])

        wait_for(lambda: Job.objects.get(pk=job_id).status == JobStatus.RUNNING, timeout=60, message="the job to run")
        running = value(scrape(url), "anime_jobs", state="running", **labels)
        assert running == 1, "the running job is counted from the database"
        time.sleep(0.5)
        assert proxied_simulator.sever_websockets() >= 1, "no tracker websocket to cut"
        wait_for(lambda: Job.objects.get(pk=job_id).is_final, timeout=90, message="the job to finish")
        job = Job.objects.get(pk=job_id)
        assert job.status == JobStatus.COMPLETED, job.error_message

        after = scrape(url)

        def moved(name: str, **more: str) -> float:
            return value(after, name, **more) - value(before, name, **more)

        assert moved("anime_job_queue_wait_seconds_count", **labels) == 1
        assert moved("anime_job_run_seconds_count", **labels, outcome="completed") == 1
        assert moved("anime_job_run_seconds_sum", **labels, outcome="completed") == pytest.approx(
            job.run_seconds, abs=0.01
        )
        assert moved("anime_job_queue_wait_seconds_sum", **labels) == pytest.approx(job.wait_seconds, abs=0.01)
        assert moved("anime_tracker_reconnects_total", reason="dropped") >= 1
        assert moved("anime_progress_writes_total") >= 1
        assert moved("anime_broadcasts_total", outcome="sent") >= 1
        assert value(after, "anime_jobs", state="running", **labels) == 0
        assert value(after, "anime_queue_depth", backend=backend) == 0
    finally:
        if server is not None:
            server.stop(grace=10)
        worker.stop()
