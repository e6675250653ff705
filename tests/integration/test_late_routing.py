"""Late routing on real parts: two simulators, a real GPU worker each (and a second worker for one
of them by mistake), the test database, Redis. A job is bound to a GPU only when one takes it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.core.cache import cache

from devtools.simulator_process import SimulatorProcess
from fleet.backends import gpu_queue
from jobs.models import Job
from jobs.wake import wake_mark
from tests.conftest import wait_for
from tests.factories import UserFactory, api_key_for
from tests.integration.test_job_lifecycle import sleep_workflow, submit, wait_final
from tests.system import CeleryWorker, database_url_for_subprocess

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

BACKENDS = ("route-a", "route-b")


class Fleet:
    def __init__(self, sims: dict[str, SimulatorProcess], workers: dict[str, list[CeleryWorker]], env: dict[str, str]):
        self.sims = sims
        self.workers = workers
        self.env = env

    def submissions(self, backend: str) -> list[dict[str, Any]]:
        return requests.get(f"{self.sims[backend].url}/sim/submissions", timeout=5).json()

    def prompt_ids(self, backend: str) -> list[str]:
        return [entry["prompt_id"] for entry in self.submissions(backend) if entry["accepted"]]


@pytest.fixture
def fleet(redis_of_this_run, transactional_db, settings, tmp_path: Path) -> Iterator[Fleet]:
    sims = {name: SimulatorProcess(output_dir=tmp_path / name / "output") for name in BACKENDS}
    for sim in sims.values():
        sim.start()
    backends = ",".join(f"{name}={sim.url}" for name, sim in sims.items())
    settings.COMFYUI_BACKENDS = {name: sim.url for name, sim in sims.items()}
    settings.COMFYUI_DEFAULT_BACKEND = BACKENDS[0]
    settings.MEDIA_ROOT = tmp_path / "media"
    env = dict(
        {k: v for k, v in os.environ.items() if k != "COMFYUI_URL"},
        DATABASE_URL=database_url_for_subprocess(),
        COMFYUI_BACKENDS=backends,
        COMFYUI_DEFAULT_BACKEND=BACKENDS[0],
        MEDIA_ROOT=str(tmp_path / "media"),
        PYTHONUNBUFFERED="1",
    )
    cache.delete_many([wake_mark(name) for name in BACKENDS])  # no wake pending from a test before
    workers: dict[str, list[CeleryWorker]] = {name: [] for name in BACKENDS}
    for name in BACKENDS:
        worker = CeleryWorker(queue=gpu_queue(name), env=env, log_path=tmp_path / f"{name}.log", name=f"test-{name}")
        worker.start()
        workers[name].append(worker)
    try:
        yield Fleet(sims, workers, env)
    finally:
        for group in workers.values():
            for worker in group:
                worker.stop()
        for sim in sims.values():
            sim.stop()


def api_for(user: Any) -> Any:
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_for(user)}")
    return client


def test_a_job_goes_to_the_free_backend_while_the_other_is_busy(fleet):
    api = api_for(UserFactory.create())
    long = submit(api, sleep_workflow(4.0), backend="route-a")
    wait_for(lambda: Job.objects.get(pk=long["id"]).status == "running", timeout=30, message="route-a busy")
    quick = submit(api, sleep_workflow(0.3))
    assert quick["backend"] == "" and quick["waiting_for"] == "a free backend"
    done = wait_final(api, quick["id"], timeout=30)
    assert done["status"] == "completed" and done["backend"] == "route-b", done
    assert Job.objects.get(pk=long["id"]).status == "running", "it did not wait for route-a"
    assert wait_final(api, long["id"])["backend"] == "route-a"


def test_a_stopped_backend_s_waiting_jobs_run_on_the_other(fleet):
    for worker in fleet.workers["route-a"]:
        worker.stop()
    api = api_for(UserFactory.create())
    jobs = [submit(api, sleep_workflow(0.2)) for _ in range(3)]
    finished = [wait_final(api, job["id"], timeout=60) for job in jobs]
    assert {job["status"] for job in finished} == {"completed"}
    assert {job["backend"] for job in finished} == {"route-b"}
    assert fleet.prompt_ids("route-a") == []


def test_fair_share_between_two_users_on_real_workers(fleet):
    # One backend only, so the order is plain to see: route-b's worker stops first.
    for worker in fleet.workers["route-b"]:
        worker.stop()
    alice, bob = api_for(UserFactory.create()), api_for(UserFactory.create())
    first = submit(alice, sleep_workflow(1.5))
    wait_for(lambda: Job.objects.get(pk=first["id"]).status == "running", timeout=30, message="first running")
    alices = [submit(alice, sleep_workflow(0.2)) for _ in range(4)]
    bobs = submit(bob, sleep_workflow(0.2))
    for job in [*alices, bobs]:
        wait_final(alice if job is not bobs else bob, job["id"], timeout=60)
    ended = Job.objects.filter(pk__in=[j["id"] for j in [*alices, bobs]])
    started = sorted(ended, key=lambda job: job.submitted_at or job.created_at)
    assert [str(job.pk) for job in started][:2] == [alices[0]["id"], bobs["id"]], "Bob waits for one of Alice's jobs"


def test_two_workers_for_one_backend_still_send_one_prompt_per_attempt(fleet, tmp_path):
    twin = CeleryWorker(
        queue=gpu_queue("route-a"), env=fleet.env, log_path=tmp_path / "twin.log", name="test-route-a-twin"
    )
    twin.start()
    fleet.workers["route-a"].append(twin)
    for worker in fleet.workers["route-b"]:
        worker.stop()
    api = api_for(UserFactory.create())
    jobs = [submit(api, sleep_workflow(0.3), backend="route-a") for _ in range(4)]
    for job in jobs:
        assert wait_final(api, job["id"], timeout=60)["status"] == "completed"
    prompts = fleet.prompt_ids("route-a")
    assert sorted(prompts) == sorted(job["id"] for job in jobs), "each job's prompt once, no other"
    submissions = sorted(fleet.submissions("route-a"), key=lambda entry: entry["received_at"])
    assert len(submissions) == 4
