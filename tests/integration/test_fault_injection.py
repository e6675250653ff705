"""Fault injection on real parts: Celery worker processes, Redis, the database, the ComfyUI simulator.

Every scenario runs its own simulator behind a `ComfyProxy` (tests/integration/fault_tools.py) and its own
GPU queue (a backend named after the test), so nothing it does reaches another test's workers.
The proxy is transparent unless told otherwise; it counts every `POST /prompt`, so the tests can
say per prompt_id how many times it reached ComfyUI, even across a ComfyUI restart. Each scenario
asserts that no job is lost (every job ends in a final state, with the right outcome) and that
none runs twice (each prompt_id posted once, at most one of a job's prompts executed).

The matrix of all scenarios is written to test-artifacts/fault-matrix.txt (and
fault-matrix-<database>.txt). Run `FAULT_RUNS=5 pytest tests/test_fault_injection.py` to repeat
every scenario.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from kombu import pools as kombu_pools

from devtools.simulator_process import SimulatorProcess
from jobs import sweeps
from jobs.models import FINAL_STATUSES, Job, JobAttempt, JobEvent
from jobs.tasks import job_run
from jobs.tracking import job_track, tracker_client_id
from tests.conftest import wait_for
from tests.factories import SLEEP_WORKFLOW, api_key_for
from tests.integration.fault_tools import (
    BeatProcess,
    ComfyProxy,
    Fault,
    FaultMatrix,
    JobOutcome,
    PrivateRedis,
    comfy_history,
    comfy_queue_ids,
    history_messages,
    sim_submissions,
)
from tests.system import ARTIFACTS, CeleryWorker, database_url_for_subprocess
from tests.workflows import text_to_image

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

RUNS = range(int(os.environ.get("FAULT_RUNS", "1")))
ORIGIN = [(b"origin", b"http://localhost:8000")]
# A tracker beats at least every 5 s (jobs.tracking.HEARTBEAT_SECONDS); "stale" must be longer.
STALE_SECONDS = 7
MATRIX = FaultMatrix()
_counter = itertools.count(1)


class _ReportKeeper:
    """Keeps each test's call-phase report on its item, so the matrix can say why a run failed."""

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        if report.when == "call":
            item.fault_call_report = report


def _forget_old_runs() -> None:
    """Log folders of earlier pytest processes that have ended."""
    for folder in (ARTIFACTS / "fault").glob("run-*"):
        pid = folder.name.removeprefix("run-")
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def fault_matrix(request) -> Iterator[FaultMatrix]:
    _forget_old_runs()
    keeper = _ReportKeeper()
    request.config.pluginmanager.register(keeper, f"fault-report-keeper-{id(keeper)}")
    yield MATRIX
    request.config.pluginmanager.unregister(keeper)
    vendor = "postgresql" if "postgresql" in django_settings.DATABASES["default"]["ENGINE"] else "sqlite"
    MATRIX.write(ARTIFACTS / "fault-matrix.txt", vendor)
    MATRIX.write(ARTIFACTS / f"fault-matrix-{vendor}.txt", vendor)


# --- workflows ----------------------------------------------------------------------------------


def sleep_workflow(seconds: float, prefix: str = "fault", outputs: int = 1) -> dict:
    workflow = copy.deepcopy(SLEEP_WORKFLOW)
    workflow["2"]["inputs"]["seconds"] = seconds
    workflow["3"]["inputs"]["filename_prefix"] = prefix
    for extra in range(1, outputs):
        workflow[str(3 + extra)] = {
            "class_type": "SaveImage",
            "inputs": {"images": ["2", 0], "filename_prefix": f"{prefix}_{extra}"},
        }
    # A distinct colour per job, so ComfyUI's cache never serves one job from another.
    workflow["1"]["inputs"]["color"] = time.monotonic_ns() % 16_777_215
    return workflow


def silent_node_workflow(seconds_without_progress: float, steps: int = 2) -> dict:
    """A sampler-like node that reports nothing for `seconds_without_progress` per step.

    The simulator has no node that hangs for ever; ProbePreviewSampler sleeps up to 60 s between
    two ProgressBar updates, and (as in ComfyUI) only notices an interrupt at such an update.
    """
    workflow = copy.deepcopy(SLEEP_WORKFLOW)
    workflow["2"] = {
        "class_type": "ProbePreviewSampler",
        "inputs": {"image": ["1", 0], "steps": steps, "seconds_per_step": seconds_without_progress},
    }
    workflow["1"]["inputs"]["color"] = time.monotonic_ns() % 16_777_215
    return workflow


# --- the rig: simulator + proxy + processes of one scenario -------------------------------------


class FaultRig:
    def __init__(
        self, *, name: str, scenario: str, tmp_path: Path, settings: Any, api: Any, sim_args: tuple[str, ...] = ()
    ) -> None:
        self.name = name
        self.scenario = scenario
        self.settings = settings
        self.api = api
        self.backend = f"fi{os.getpid()}x{next(_counter)}"
        self.queue = f"gpu.{self.backend}"
        # Per pytest process: several runs of this file may share the working tree.
        self.log_dir = ARTIFACTS / "fault" / f"run-{os.getpid()}" / name
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for old in self.log_dir.glob("*.log"):
            old.unlink()
        self.media_root = tmp_path / "media"
        self.media_root.mkdir()
        self.sim = SimulatorProcess(output_dir=tmp_path / "comfyui" / "output", extra_args=sim_args)
        self.proxy = ComfyProxy("http://127.0.0.1:0")
        self.processes: list[Any] = []
        self.redis: PrivateRedis | None = None
        self.job_ids: list[str] = []
        self.extra_env: dict[str, str] = {}
        self._passed = False

    def start(self) -> None:
        self.sim.start()
        self.proxy.upstream = self.sim.url
        self.proxy.start()
        self.settings.COMFYUI_BACKENDS = {self.backend: self.proxy.url}
        self.settings.COMFYUI_DEFAULT_BACKEND = self.backend
        self.settings.MEDIA_ROOT = self.media_root
        self.settings.TRACKER_STALE_SECONDS = STALE_SECONDS
        self.settings.JOB_RETRY_BACKOFF_SECONDS = 1.0
        MATRIX.run_started(self.scenario)

    # --- processes ---------------------------------------------------------------------------

    def env(self, **overrides: Any) -> dict[str, str]:
        env = dict(
            os.environ,
            DATABASE_URL=database_url_for_subprocess(),
            COMFYUI_BACKENDS=f"{self.backend}={self.proxy.url}",
            COMFYUI_DEFAULT_BACKEND=self.backend,
            MEDIA_ROOT=str(self.media_root),
            TRACKER_RECONNECT_SECONDS="15",
            TRACKER_STALE_SECONDS=str(STALE_SECONDS),
            JOB_RETRY_BACKOFF_SECONDS="1",
            PYTHONUNBUFFERED="1",
        )
        env.pop("COMFYUI_URL", None)
        env.update(self.extra_env)
        env.update({key: str(value) for key, value in overrides.items()})
        return env

    def worker(self, label: str = "gpu", *, queue: str | None = None, **env: Any) -> CeleryWorker:
        worker = CeleryWorker(
            queue=queue or self.queue,
            env=self.env(**env),
            log_path=self.log_dir / f"{label}.log",
            name=f"{self.backend}-{label}",
        )
        self.processes.append(worker)
        worker.start()
        return worker

    def sweepers(self, sweep_seconds: float = 2.0, **env: Any) -> tuple[CeleryWorker, BeatProcess]:
        """A default-queue worker and celery beat: jobs.tasks.sweep_jobs every `sweep_seconds`."""
        worker = self.worker("default", queue="default", SWEEP_SECONDS=sweep_seconds, **env)
        beat = BeatProcess(
            env=self.env(SWEEP_SECONDS=sweep_seconds, **env),
            log_path=self.log_dir / "beat.log",
            schedule_path=self.log_dir / "beat-schedule",
        )
        self.processes.append(beat)
        beat.start()
        return worker, beat

    def private_redis(self) -> PrivateRedis:
        self.redis = PrivateRedis(self.log_dir / "redis.log")
        self.redis.start()
        self.extra_env.update(REDIS_URL=self.redis.url, CELERY_BROKER_URL=self.redis.url)
        return self.redis

    def stop(self) -> None:
        for process in reversed(self.processes):
            try:
                if isinstance(process, CeleryWorker):
                    process.kill()
                    process.stop()
                else:
                    process.stop()
            except Exception:
                pass
        self.proxy.stop()
        self.proxy.dump(self.log_dir / "proxy.log")
        self.sim.stop()
        if self.sim.log_path.exists():
            shutil.copy(self.sim.log_path, self.log_dir / "simulator.log")
        if self.redis is not None:
            self.redis.stop()

    # --- jobs --------------------------------------------------------------------------------

    def submit(self, workflow: dict, **extra: Any) -> str:
        response = self.api.post(
            "/api/jobs/", {"workflow": workflow, "job_type": "image", "backend": self.backend, **extra}, format="json"
        )
        assert response.status_code == 201, response.content
        job_id = response.json()["id"]
        self.job_ids.append(job_id)
        return job_id

    def job(self, job_id: str) -> Job:
        return Job.objects.get(pk=job_id)

    def api_job(self, job_id: str) -> dict:
        return self.api.get(f"/api/jobs/{job_id}/").json()

    def wait_final(self, job_id: str, timeout: float = 90.0) -> Job:
        wait_for(
            lambda: self.job(job_id).status in FINAL_STATUSES,
            timeout=timeout,
            interval=0.2,
            message=f"job {job_id} to finish ({self.describe(job_id)})",
        )
        return self.job(job_id)

    def wait_running(self, job_id: str, min_step: float = 0.5, timeout: float = 30.0) -> Job:
        def running() -> bool:
            job = self.job(job_id)
            return job.status == "running" and (job.step_value or 0) >= min_step

        wait_for(running, timeout=timeout, interval=0.1, message=f"job {job_id} running ({self.describe(job_id)})")
        return self.job(job_id)

    def describe(self, job_id: str) -> str:
        job = Job.objects.filter(pk=job_id).first()
        if job is None:
            return "no such job"
        return (
            f"status={job.status} attempt={job.attempt} step={job.step_value}/{job.step_max} "
            f"category={job.failure_category!r} deliveries={job.deliveries} error={job.error_message[:300]!r}"
        )

    # --- counting prompts -------------------------------------------------------------------

    def prompt_ids(self, job_id: str) -> list[str]:
        """Every prompt the job sent to ComfyUI (or recorded as an attempt), oldest first."""
        client = tracker_client_id(Job(id=uuid.UUID(job_id)))
        ids = [s.prompt_id for s in self.proxy.forwarded_submissions() if s.client_id == client]
        ids += [str(a.prompt_id) for a in JobAttempt.objects.filter(job_id=job_id).order_by("number")]
        return list(dict.fromkeys(pid for pid in ids if pid))

    def outcome(self, job_id: str) -> JobOutcome:
        job = Job.objects.filter(pk=job_id).first()
        prompts = self.prompt_ids(job_id)
        duplicated = sum(max(0, self.posts(pid) - 1) for pid in prompts)
        try:
            history = comfy_history(self.sim.url)
            queued = set(comfy_queue_ids(self.sim.url))
        except Exception:
            history, queued = {}, set()
        executed = [
            pid
            for pid in prompts
            if (history.get(pid, {}).get("status") or {}).get("status_str") == "success" or pid in queued
        ]
        duplicated += max(0, len(executed) - 1)
        return JobOutcome(
            job_id=job_id,
            status=job.status if job else "missing",
            category=job.failure_category if job else "",
            prompts=len(prompts),
            duplicated=duplicated,
        )

    def posts(self, prompt_id: str) -> int:
        """POSTs of this prompt_id that reached ComfyUI: the proxy's count, or the simulator's own
        log (`/sim/submissions`) when it has one and counted more."""
        count = self.proxy.posts(prompt_id)
        logged = sim_submissions(self.sim.url) if self.sim.is_running() else None
        if logged is not None:
            count = max(
                count,
                sum(1 for entry in logged if str(entry.get("prompt_id")) == prompt_id and entry.get("accepted", True)),
            )
        return count

    def assert_ran_once(self, job_id: str, *, prompts: int = 1) -> None:
        """Each of the job's prompts reached ComfyUI once; `prompts` of them in all; at most one ran
        to success and none is left in ComfyUI's queue."""
        ids = self.prompt_ids(job_id)
        assert len(ids) == prompts, f"job {job_id} sent {len(ids)} prompts to ComfyUI: {ids}"
        for pid in ids:
            assert self.posts(pid) == 1, f"prompt {pid} was posted {self.posts(pid)} times"
        history = comfy_history(self.sim.url)
        successes = [pid for pid in ids if (history.get(pid, {}).get("status") or {}).get("status_str") == "success"]
        assert len(successes) <= 1, f"job {job_id} ran to success {len(successes)} times in ComfyUI: {successes}"
        left = set(comfy_queue_ids(self.sim.url)) & set(ids)
        assert not left, f"prompts of job {job_id} still in ComfyUI's queue: {left}"

    def finish(self) -> None:
        self._passed = True

    def record(self) -> None:
        try:
            MATRIX.add_jobs(self.scenario, [self.outcome(job_id) for job_id in self.job_ids])
        except Exception as exc:
            MATRIX.note(self.scenario, f"could not count outcomes: {exc!r}")
        if self._passed:
            MATRIX.run_passed(self.scenario)


@pytest.fixture
def rig_factory(request, transactional_db, settings, tmp_path, api) -> Iterator[Any]:
    rigs: list[FaultRig] = []

    def make(scenario: str, sim_args: tuple[str, ...] = ()) -> FaultRig:
        base = request.node.originalname.removeprefix("test_")[:40]
        params = getattr(getattr(request.node, "callspec", None), "id", "")
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{base}-{params}" if params else base)
        rig = FaultRig(name=name, scenario=scenario, tmp_path=tmp_path, settings=settings, api=api, sim_args=sim_args)
        rigs.append(rig)
        rig.start()
        return rig

    yield make
    report = getattr(request.node, "fault_call_report", None)
    for rig in rigs:
        if report is not None and report.failed:
            crash = getattr(report.longrepr, "reprcrash", None)
            reason = (crash.message if crash else str(report.longrepr)).strip().splitlines()[0]
            MATRIX.note(rig.scenario, f"FAILED: {reason[:400]}")
        rig.record()
        rig.stop()


def closed_attempts(job_id: str) -> list[JobAttempt]:
    """The job's attempts once all are closed (the job's final status and its attempt's outcome
    are two writes: give the second a moment)."""
    wait_for(
        lambda: not JobAttempt.objects.filter(job_id=job_id, outcome="").exists(),
        timeout=10,
        message=f"the attempts of job {job_id} to be closed",
    )
    return list(JobAttempt.objects.filter(job_id=job_id).order_by("number"))


def statuses_on_timeline(job_id: str) -> list[str]:
    return [e.data.get("to") for e in JobEvent.objects.filter(job_id=job_id, kind="status").order_by("seq")]


def assert_outputs_match_history(rig: FaultRig, job: Job, expected: int) -> None:
    entry = comfy_history(rig.sim.url)[str(job.prompt_id)]
    listed = sorted(
        item["filename"]
        for node in entry["outputs"].values()
        for items in node.values()
        if isinstance(items, list)
        for item in items
        if isinstance(item, dict) and "filename" in item
    )
    stored = sorted(job.outputs.values_list("comfy_filename", flat=True))
    assert len(listed) == expected, listed
    assert stored == listed, f"stored outputs {stored} != ComfyUI's {listed}"
    for output in job.outputs.all():
        with output.file.open("rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def assert_no_duplicate_node_events(job_id: str) -> None:
    """One tracker followed the attempt: each node started and finished once on the timeline."""
    seen = [
        (e.kind, e.node_id) for e in JobEvent.objects.filter(job_id=job_id, kind__in=["node_started", "node_finished"])
    ]
    duplicates = {item for item in seen if seen.count(item) > 1}
    assert not duplicates, f"timeline events recorded more than once (two trackers?): {sorted(duplicates)}"


# --- 1. SIGKILL the GPU worker mid-job ----------------------------------------------------------


@pytest.mark.parametrize("run", RUNS)
def test_sigkill_whole_gpu_worker_mid_job_is_resumed_by_the_orphan_sweep(rig_factory, run):
    """The whole worker (main process and pool) dies; its unacked message would come back only
    after the visibility timeout, so the beat's orphan sweep (a real beat + default worker) must
    notice the stale heartbeat and hand the job to a new worker, which re-attaches to the prompt."""
    rig = rig_factory("1a SIGKILL GPU worker (whole group) mid-job")
    rig.sweepers(sweep_seconds=2)
    first = rig.worker("gpu-1")
    job_id = rig.submit(sleep_workflow(25.0, prefix="killed"))
    rig.wait_running(job_id, min_step=1.0)
    first.kill()
    assert not first.alive()
    second = rig.worker("gpu-2")

    job = rig.wait_final(job_id, timeout=120)
    assert job.status == "completed", rig.describe(job_id)
    assert job.attempt == 1 and str(job.prompt_id) == job_id
    assert job.deliveries == 2, "the first worker, then the one the job was handed to"
    # Handed over by the sweep (its note), or by a wake already waiting when the second worker
    # started: a sweep that ran while the job waited, after the first worker had received its wake
    # but before its take committed, sends another (seen in CI); that worker finds the active job
    # and re-attaches once the dead tracker's heartbeat is stale. Either way: one prompt, below.
    notes = [e.data for e in JobEvent.objects.filter(job_id=job_id, kind="note")]
    resumed_by_sweep = any("resuming" in str(n.get("message")) for n in notes)
    woken_at_start = "jobs.tasks.backend_work" in second.log_path.read_text()
    assert resumed_by_sweep or woken_at_start, notes
    (attempt,) = closed_attempts(job_id)
    assert attempt.outcome == "completed"
    assert_outputs_match_history(rig, job, expected=1)
    rig.assert_ran_once(job_id)
    assert len(comfy_history(rig.sim.url)) == 1, "exactly one prompt in ComfyUI"
    assert second.alive()
    rig.finish()


@pytest.mark.parametrize("run", RUNS)
def test_sigkill_pool_child_mid_job_is_redelivered_and_resumed(rig_factory, run):
    """Only the pool child dies: reject_on_worker_lost puts the message back at once; the next
    delivery waits until the dead tracker's heartbeat is stale, then re-attaches. No sweep runs."""
    rig = rig_factory("1b SIGKILL pool child mid-job")
    worker = rig.worker("gpu")
    job_id = rig.submit(sleep_workflow(15.0, prefix="child"))
    rig.wait_running(job_id, min_step=1.0)
    child = worker.kill_pool_child()

    job = rig.wait_final(job_id, timeout=90)
    assert job.status == "completed", rig.describe(job_id)
    assert job.attempt == 1
    assert job.deliveries == 2
    assert worker.alive(), "the worker's main process survives its child"
    assert child not in worker.pool_children()
    assert "WorkerLostError" in worker.log()
    assert_outputs_match_history(rig, job, expected=1)
    rig.assert_ran_once(job_id)
    assert len(comfy_history(rig.sim.url)) == 1
    rig.finish()


# --- 2. ComfyUI restarted mid-job ---------------------------------------------------------------


@pytest.mark.parametrize("run", RUNS)
def test_comfyui_restart_mid_job_is_detected_lost_and_retried_with_a_new_prompt(rig_factory, run):
    rig = rig_factory("2 ComfyUI restarted mid-job")
    rig.worker("gpu")
    job_id = rig.submit(sleep_workflow(5.0, prefix="restart"))
    rig.wait_running(job_id, min_step=1.0)
    rig.sim.restart()  # SIGKILL and start again on the same port: queue and history are empty

    job = rig.wait_final(job_id, timeout=90)
    assert job.status == "completed", rig.describe(job_id)
    attempts = closed_attempts(job_id)
    assert [(a.number, a.outcome, a.failure_category) for a in attempts] == [
        (1, "failed", "lost"),
        (2, "completed", ""),
    ]
    assert str(attempts[0].prompt_id) == job_id
    assert job.attempt == 2 and str(job.prompt_id) == str(attempts[1].prompt_id) != job_id
    assert statuses_on_timeline(job_id)[-3:] == ["submitted", "running", "completed"]
    history = comfy_history(rig.sim.url)
    assert set(history) == {str(job.prompt_id)}, "only the second attempt's prompt is in the new ComfyUI"
    assert_outputs_match_history(rig, job, expected=1)
    rig.assert_ran_once(job_id, prompts=2)
    rig.finish()


# --- 2b. a poison workflow: ComfyUI goes down with it every time -----------------------------------


@pytest.mark.parametrize("run", RUNS)
def test_a_poison_workflow_that_brings_comfyui_down_each_time_fails_after_its_attempts(rig_factory, run, settings):
    """Each attempt takes ComfyUI down while it runs (the simulator killed and started again, as a
    node that crashes the process would): the job is retried as `lost` up to JOB_MAX_ATTEMPTS, one new
    prompt each, then fails `lost`; the backend is not blamed: the next job runs there at once."""
    rig = rig_factory("2b poison workflow: ComfyUI down with it every time")
    rig.worker("gpu")
    job_id = rig.submit(sleep_workflow(4.0, prefix="poison"))
    began = time.monotonic()
    crashes: list[float] = []
    while (job := rig.job(job_id)).status not in FINAL_STATUSES:
        assert time.monotonic() - began < 120, rig.describe(job_id)
        if job.status == "running" and job.attempt == len(crashes) + 1:
            rig.sim.restart()  # SIGKILL and start again: the prompt, the queue and the history are gone
            crashes.append(time.monotonic() - began)
        time.sleep(0.1)
    failed_after = time.monotonic() - began

    assert job.status == "failed" and job.failure_category == "lost", rig.describe(job_id)
    assert len(crashes) == settings.JOB_MAX_ATTEMPTS, "one crash per attempt, and no attempt more"
    attempts = closed_attempts(job_id)
    assert [(a.number, a.outcome, a.failure_category) for a in attempts] == [
        (number, "failed", "lost") for number in range(1, settings.JOB_MAX_ATTEMPTS + 1)
    ]
    rig.assert_ran_once(job_id, prompts=settings.JOB_MAX_ATTEMPTS)  # a new prompt per attempt, each posted once

    healthy_id = rig.submit(sleep_workflow(0.5, prefix="after-poison"))
    healthy = rig.wait_final(healthy_id, timeout=60)
    assert healthy.status == "completed" and healthy.backend == rig.backend, rig.describe(healthy_id)
    rig.assert_ran_once(healthy_id)
    print(
        f"\npoison workflow: ComfyUI down at {', '.join(f'{t:.1f}' for t in crashes)} s; failed `lost` "
        f"{failed_after:.1f} s after submit, {len(attempts)} attempts; the next job completed on the same backend"
    )
    rig.finish()


# --- 3. websocket dropped mid-job ----------------------------------------------------------------


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("how", ["cut-3-times", "comfyui-notices-late", "unavailable-until-done"])
def test_websocket_dropped_mid_job_completes_with_all_outputs(rig_factory, how, run):
    rig = rig_factory(f"3 websocket dropped mid-job ({how})")
    rig.worker("gpu")
    job_id = rig.submit(sleep_workflow(6.0, prefix="ws", outputs=2))
    client = tracker_client_id(Job(id=uuid.UUID(job_id)))
    rig.wait_running(job_id, min_step=0.5)
    if how == "cut-3-times":
        for cut in range(3):
            opens = len(rig.proxy.websocket_opens)
            assert rig.proxy.sever_websockets() >= 1, f"no websocket to cut (cut {cut + 1})"
            wait_for(
                lambda opens=opens: bool(len(rig.proxy.websocket_opens) > opens),  # type: ignore[misc]
                timeout=20,
                message=f"the tracker to reconnect after cut {cut + 1}",
            )
            time.sleep(1.0)
            if rig.job(job_id).status in FINAL_STATUSES or not rig.proxy.open_websockets(client):
                break
    elif how == "comfyui-notices-late":
        # The worker's side breaks at once; ComfyUI sees its side close only 2 s later, after the
        # tracker has reconnected with the same clientId (ComfyUI then forgets whichever socket
        # holds that id: the new one).
        assert rig.proxy.sever_websockets(upstream_close_delay=2.0) >= 1
    else:
        # No websocket at all until ComfyUI has finished the prompt: every event of the rest of
        # the run is gone; only /queue and /history can tell.
        rig.proxy.set_fault(Fault("500", http=False, websocket=True))
        assert rig.proxy.sever_websockets() >= 1
        wait_for(lambda: job_id in comfy_history(rig.sim.url), timeout=30, message="ComfyUI to finish the prompt")
        time.sleep(1.0)
        rig.proxy.set_fault(None)

    job = rig.wait_final(job_id, timeout=60)
    assert job.status == "completed", rig.describe(job_id)
    assert job.attempt == 1
    assert_outputs_match_history(rig, job, expected=2)
    assert job.progress == 1.0
    assert job.nodes_done == job.nodes_total == 4, (
        f"completed, but the job says {job.nodes_done}/{job.nodes_total} nodes done: "
        "the tracker missed the end of the run"
    )
    if how != "unavailable-until-done":
        # The socket was back while the prompt still ran: the rest of its events must come through.
        finished = {e.node_id for e in JobEvent.objects.filter(job_id=job_id, kind="node_finished")}
        assert finished == {"1", "2", "3", "4"}, (
            f"node_finished on the timeline only for {sorted(finished)}: after reconnecting, the tracker "
            "heard nothing more of the run (its new socket was dropped by ComfyUI) and learned the end "
            "only from /history"
        )
    assert len(rig.proxy.websocket_opens) >= 2, "the tracker reconnected"
    rig.assert_ran_once(job_id)
    rig.finish()


# --- 4. Redis restarted -----------------------------------------------------------------------


@contextmanager
def celery_broker(url: str) -> Iterator[None]:
    """Point this process's Celery app (what job_enqueue sends with) at another broker."""
    from anime_production.celery import app

    def switch(to: str) -> None:
        # kombu keeps its pools in a global registry keyed by connection: close and forget them
        # all, or the next lookup for the old URL hands back a closed pool.
        kombu_pools.reset()
        app.conf.broker_url = to
        app._pool = None
        if "amqp" in app.__dict__:
            app.amqp._producer_pool = None

    previous = app.conf.broker_url
    switch(url)
    try:
        yield
    finally:
        switch(previous)


def private_channel_layer(settings: Any, url: str) -> None:
    layers = copy.deepcopy(django_settings.CHANNEL_LAYERS)
    layers["default"]["CONFIG"]["hosts"] = [{"address": url, "socket_timeout": None, "max_connections": 1000}]
    settings.CHANNEL_LAYERS = layers  # channels resets its layers on setting_changed


@pytest.mark.parametrize("run", RUNS)
def test_redis_restart_mid_job_job_completes_and_subscriber_gets_final_state(rig_factory, settings, user, run):
    rig = rig_factory("4a Redis restarted mid-job")
    redis = rig.private_redis()
    private_channel_layer(settings, redis.url)
    worker = rig.worker("gpu")
    token = api_key_for(user)
    report: dict[str, Any] = {}

    with celery_broker(redis.url):
        job_id = rig.submit(sleep_workflow(8.0, prefix="redis"))

        async def watch() -> None:
            path = f"/ws/jobs/{job_id}/"
            headers = [*ORIGIN, (b"x-api-key", token.encode())]
            ws = WebsocketCommunicator(rig_application(), path, headers=headers)
            connected, _ = await ws.connect(timeout=10)
            assert connected
            seen: list[dict] = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 90
            completed_in_db_at = None
            report.update(closed=False, live_final=None, restarted_at_step=None)
            while loop.time() < deadline:
                if await ws.receive_nothing(timeout=0.5, interval=0.05):
                    status = await database_sync_to_async(lambda: Job.objects.get(pk=job_id).status)()
                    if status in FINAL_STATUSES:
                        completed_in_db_at = completed_in_db_at or loop.time()
                        if loop.time() - completed_in_db_at > 20:
                            break  # the final state never came on this socket
                    continue
                output = await ws.receive_output(timeout=5)
                if output["type"] == "websocket.close":
                    report["closed"] = True
                    break
                message = json.loads(output["text"])
                seen.append(message)
                state = message.get("job") or {}
                if state.get("status") in FINAL_STATUSES:
                    report["live_final"] = state["status"]
                    break
                step = (state.get("step") or {}).get("value") or 0
                if report["restarted_at_step"] is None and state.get("status") == "running" and step >= 1:
                    report["restarted_at_step"] = step
                    await asyncio.to_thread(redis.restart, 1.5)
            if not report["closed"]:
                await ws.disconnect()
            report["seen"] = seen
            # What a browser gets when it (re)connects: a snapshot from the database.
            again = WebsocketCommunicator(rig_application(), path, headers=headers)
            connected, _ = await again.connect(timeout=10)
            assert connected
            report["snapshot"] = (await again.receive_json_from(timeout=10))["job"]["status"]
            await again.disconnect()

        async_to_sync(watch)()

    assert report["restarted_at_step"] is not None, "Redis was never restarted mid-job"
    assert redis.restarts == 1
    job = rig.wait_final(job_id, timeout=60)
    assert job.status == "completed", rig.describe(job_id)
    assert worker.alive()
    rig.assert_ran_once(job_id)
    assert report["snapshot"] == "completed"
    if report["live_final"] == "completed":
        MATRIX.note(rig.scenario, "the subscriber connected before the restart received `completed` live")
    elif report["closed"]:
        MATRIX.note(rig.scenario, "the server closed the subscriber's socket; its reconnect snapshot said `completed`")
    else:
        MATRIX.note(rig.scenario, "the open subscriber never got the final state after the Redis restart")
    # A browser trusts its socket: either the final state arrives on it, or the server closes it
    # (and the browser reconnects to a snapshot). A socket left open and silent is a stuck page.
    assert report["live_final"] == "completed" or report["closed"], (
        "after the Redis restart the subscriber's socket stayed open but never received the final "
        f"state (messages seen: {[(m.get('job') or {}).get('status') for m in report['seen']]})"
    )
    rig.finish()


def rig_application():
    from anime_production.asgi import application

    return application


@pytest.mark.parametrize("run", RUNS)
def test_redis_restart_while_job_waits_loses_the_message_and_the_sweep_sends_it_again(rig_factory, settings, run):
    rig = rig_factory("4b Redis restarted while the job waits")
    redis = rig.private_redis()
    private_channel_layer(settings, redis.url)
    with celery_broker(redis.url):
        job_id = rig.submit(sleep_workflow(1.0, prefix="waiting"))  # no GPU worker yet: it waits
        redis.restart()  # the broker message is gone with Redis
        worker = rig.worker("gpu")
        time.sleep(2.0)
        assert rig.job(job_id).status == "queued" and rig.job(job_id).deliveries == 0
        settings.TRACKER_STALE_SECONDS = 1  # "quiet for 3 x stale": don't wait 21 s for the sweep
        wait_for(
            lambda: sweeps.sweep_waiting_jobs() >= 1,
            timeout=30,
            interval=1.0,
            message="the sweep to notice the lost message",
        )
        job = rig.wait_final(job_id, timeout=60)
    assert job.status == "completed", rig.describe(job_id)
    assert job.deliveries == 1
    assert worker.alive()
    rig.assert_ran_once(job_id)
    rig.finish()


# --- 5. the same task delivered twice -----------------------------------------------------------


@pytest.mark.parametrize("run", RUNS)
def test_duplicate_delivery_while_running_submits_nothing_and_does_not_disturb_the_job(rig_factory, run):
    rig = rig_factory("5a duplicate delivery while running")
    rig.worker("gpu-1")
    second = rig.worker("gpu-2")
    job_id = rig.submit(sleep_workflow(5.0, prefix="dup"))
    rig.wait_running(job_id, min_step=0.5)
    # The broker delivers it again (late ack, visibility timeout...): the idle worker takes it.
    job_run.apply_async((job_id,), queue=rig.queue)
    wait_for(
        lambda: "followed by a live tracker" in second.log() or "followed by a live tracker" in rig.processes[0].log(),
        timeout=20,
        message="the duplicate delivery to back off",
    )
    # And once more from this process, while the first delivery still follows the job.
    job_track(job_id)
    assert rig.job(job_id).status == "running", "the duplicate deliveries disturbed the job"

    job = rig.wait_final(job_id, timeout=60)
    assert job.status == "completed", rig.describe(job_id)
    assert job.deliveries == 1
    assert_no_duplicate_node_events(job_id)
    assert_outputs_match_history(rig, job, expected=1)
    rig.assert_ran_once(job_id)
    rig.finish()


@pytest.mark.parametrize("run", RUNS)
def test_duplicate_delivery_at_once_to_two_workers_runs_one_tracker_and_one_prompt(rig_factory, run):
    """Both deliveries arrive while the job still waits; ComfyUI answers slowly (500 ms for
    /object_info, which a fresh worker reads before it starts tracking, and for /queue), so both
    deliveries are past their claim and before their submit at the same time."""
    rig = rig_factory("5b duplicate delivery at once (job still queued)")
    rig.worker("gpu-1")
    rig.worker("gpu-2")
    rig.proxy.set_delay(0.5, paths=("/object_info", "/api/object_info", "/queue", "/api/queue"))
    job_id = rig.submit(sleep_workflow(4.0, prefix="race"))
    job_run.apply_async((job_id,), queue=rig.queue)

    job = rig.wait_final(job_id, timeout=60)
    rig.proxy.set_delay(0.0)
    assert job.status == "completed", rig.describe(job_id)
    rig.assert_ran_once(job_id)
    assert_outputs_match_history(rig, job, expected=1)
    assert job.nodes_done == job.nodes_total == 3, f"{job.nodes_done}/{job.nodes_total} nodes done"
    assert_no_duplicate_node_events(job_id)
    assert job.deliveries == 1, (
        f"{job.deliveries} deliveries claimed the job: services.job_claim lets any delivery claim a "
        "waiting job, so the job's worker/client_id/deliveries name whichever claimed last, not the "
        "one tracker that won the submit and follows it"
    )
    rig.finish()


# --- 6. ComfyUI answering 500, invalid JSON, or not answering ------------------------------------

FAULTS = {
    # name: (fault, what the job's error message says)
    "500": (Fault("500", websocket=False), "answered 500"),
    "invalid-json": (Fault("badjson", websocket=False), "not JSON"),
    "no-answer": (Fault("hang", websocket=False), "timed out"),
    "connection-reset": (Fault("reset"), "ComfyUI"),
}


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("fault", list(FAULTS))
def test_comfyui_faults_fail_the_job_with_a_clear_category_and_the_worker_lives_on(rig_factory, fault, run):
    rig = rig_factory(f"6 ComfyUI fault: {fault}")
    worker = rig.worker("gpu", TRACKER_RECONNECT_SECONDS=3, COMFYUI_HTTP_TIMEOUT=1.5, JOB_RETRY_BACKOFF_SECONDS=0.5)
    pid = worker.pid
    injected, says = FAULTS[fault]
    rig.proxy.set_fault(injected)
    job_id = rig.submit(sleep_workflow(0.5, prefix="fault"))

    job = rig.wait_final(job_id, timeout=120)
    assert job.status == "failed", rig.describe(job_id)
    assert job.failure_category == "comfyui_unreachable"
    assert says in job.error_message, job.error_message
    assert job.attempt == django_settings.JOB_MAX_ATTEMPTS, "retried up to the limit, then failed"
    assert rig.proxy.forwarded_submissions() == [], "nothing reached ComfyUI"
    assert comfy_history(rig.sim.url) == {}
    assert worker.alive() and worker.pid == pid
    assert "raised unexpected" not in worker.log(), "the task crashed instead of failing the job"

    rig.proxy.set_fault(None)
    next_job = rig.submit(sleep_workflow(0.5, prefix="after"))
    assert rig.wait_final(next_job, timeout=60).status == "completed", rig.describe(next_job)
    assert worker.alive() and worker.pid == pid
    rig.assert_ran_once(next_job)
    rig.finish()


@pytest.mark.parametrize("run", RUNS)
def test_comfyui_unreachable_mid_job_longer_than_the_deadline_does_not_run_the_job_twice(rig_factory, run):
    """ComfyUI (as the worker sees it) vanishes for 6 s while the prompt runs on; the tracker's
    deadline is 3 s. Whatever the job's fate, ComfyUI must not end up running it twice."""
    rig = rig_factory("6b ComfyUI unreachable mid-job past the deadline")
    rig.worker("gpu", TRACKER_RECONNECT_SECONDS=3, COMFYUI_HTTP_TIMEOUT=1.5, JOB_RETRY_BACKOFF_SECONDS=0.5)
    job_id = rig.submit(sleep_workflow(10.0, prefix="outage"))
    rig.wait_running(job_id, min_step=0.5)
    rig.proxy.set_fault(Fault("reset"))
    rig.proxy.sever_websockets()
    time.sleep(6.0)
    rig.proxy.set_fault(None)

    job = rig.wait_final(job_id, timeout=90)
    wait_for(lambda: not comfy_queue_ids(rig.sim.url), timeout=30, message="ComfyUI's queue to drain")
    history = comfy_history(rig.sim.url)
    ran = [
        pid
        for pid in rig.prompt_ids(job_id)
        if (history.get(pid, {}).get("status") or {}).get("status_str") == "success"
    ]
    assert job.status in FINAL_STATUSES
    if len(ran) > 1:
        ended = {pid: max(m[1]["timestamp"] for m in history[pid]["status"]["messages"]) / 1000 for pid in ran}
        posted = {s.prompt_id: s.at for s in rig.proxy.forwarded_submissions()}
        overlap = [
            f"{later} posted {ended[earlier] - posted[later]:.1f}s before {earlier} ended"
            for earlier, later in itertools.pairwise(ran)
            if posted[later] < ended[earlier]
        ]
        attempts = list(JobAttempt.objects.filter(job_id=job_id).values_list("number", "outcome", "failure_category"))
        pytest.fail(f"job {job_id} ran {len(ran)} times in ComfyUI ({ran}); {'; '.join(overlap)}; attempts: {attempts}")
    if job.status == "completed":
        assert_outputs_match_history(rig, job, expected=1)
    rig.finish()


# --- 7. a node that hangs ---------------------------------------------------------------------


@pytest.mark.parametrize("run", RUNS)
def test_node_without_progress_is_detected_stuck_and_its_prompt_interrupted(rig_factory, run):
    floor = 3.0
    rig = rig_factory("7 node hangs (no progress)")
    rig.worker(
        "gpu", JOB_STUCK_FLOOR_SECONDS=floor, JOB_STUCK_FACTOR=5, JOB_MAX_ATTEMPTS=2, JOB_RETRY_BACKOFF_SECONDS=0.5
    )
    job_id = rig.submit(silent_node_workflow(8.0, steps=3))

    job = rig.wait_final(job_id, timeout=120)
    assert job.status == "failed", rig.describe(job_id)
    assert job.failure_category == "stuck"
    assert "no progress for" in job.error_message and "ProbePreviewSampler" in job.error_message, job.error_message
    attempts = closed_attempts(job_id)
    assert [(a.number, a.outcome, a.failure_category) for a in attempts] == [
        (1, "failed", "stuck"),
        (2, "failed", "stuck"),
    ]
    history = comfy_history(rig.sim.url)
    starts = [
        e.at.timestamp()
        for e in JobEvent.objects.filter(job_id=job_id, kind="node_started", node_id="2").order_by("seq")
    ]
    assert len(starts) == 2, "the silent node started once per attempt"
    for attempt, started in zip(attempts, starts, strict=False):
        pid = str(attempt.prompt_id)
        interrupts = rig.proxy.interrupts_for(pid)
        assert interrupts, f"prompt {pid} was never interrupted"
        assert interrupts[0] - started <= floor + 4.0, (
            f"stuck detected {interrupts[0] - started:.1f}s after the node started (threshold {floor}s)"
        )
        assert interrupts[0] - started >= floor - 0.5, "interrupted before the threshold"
        entry = history[pid]
        assert entry["status"]["status_str"] == "error"
        assert "execution_interrupted" in history_messages(entry), history_messages(entry)
    rig.assert_ran_once(job_id, prompts=2)
    rig.finish()


def sampler_workflow(steps: int = 1) -> dict:
    """The standard SD graph; on a simulator started with a huge --step-seconds its KSampler
    reports nothing, and (like any node that never calls its ProgressBar) cannot be interrupted."""
    return text_to_image(steps=steps, width=64, height=64, seed=time.monotonic_ns() % 1_000_000, prefix="hung")


@pytest.mark.parametrize("run", RUNS)
def test_node_that_never_yields_still_ends_the_job_and_frees_the_gpu_worker(rig_factory, run):
    """A node hangs for good: no progress, and ComfyUI cannot interrupt it (it never reaches a
    ProgressBar update). The job must still end `stuck` within the threshold (plus the sweep's
    period), and the tracker must stop following a prompt that its job no longer owns, or the GPU
    worker is blocked for ever. Production settings otherwise: beat sweeps every 2 s."""
    floor = 3.0
    rig = rig_factory("7b node never yields (interrupt impossible)", sim_args=("--step-seconds", "3600"))
    env = {"JOB_STUCK_FLOOR_SECONDS": floor, "JOB_MAX_ATTEMPTS": 1}
    rig.sweepers(sweep_seconds=2, **env)
    worker = rig.worker("gpu", **env)
    job_id = rig.submit(sampler_workflow())
    wait_for(lambda: rig.job(job_id).current_node_id == "5", timeout=30, message="the sampler to start")
    started = time.time()

    job = rig.wait_final(job_id, timeout=floor + 30)
    assert job.status == "failed" and job.failure_category == "stuck", rig.describe(job_id)
    assert job.finished_at.timestamp() - started <= floor + 10, "stuck detected late"
    assert rig.proxy.interrupts_for(job_id), "the hung prompt was never interrupted"

    def tracker_gone() -> bool:
        log = worker.log()
        return log.count(" received") == log.count(" succeeded in ") + log.count(" raised ")

    try:
        wait_for(tracker_gone, timeout=20, interval=0.5, message="the tracker to let go")
    except AssertionError:
        pytest.fail(
            f"job {job_id} is {job.status} ({job.failure_category}) since {job.finished_at:%H:%M:%S}, but its "
            "tracker still follows the hung prompt 20 s later: the GPU worker takes no other job"
        )
    rig.finish()
