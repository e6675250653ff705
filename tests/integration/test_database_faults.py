"""PostgreSQL faults with the real system (issue 14, part 6): daphne, a Celery GPU worker and the ComfyUI
simulator run as processes against a PostgreSQL cluster of this module's own (private_postgres.py),
which the tests stop and start; the machine's shared PostgreSQL is never touched.

- Down at submit: the REST API, the admin and a websocket handshake answer "try again later" (503 with
  Retry-After; a websocket closed 4503), nothing is half-made (no job row, no Celery message), and the
  same processes serve again once it is back, without a restart.
- Restarted mid-job: the tracker holds its writes while the database is down and stores them when it
  is back (jobs/tracking/database_outage.py); the job completes with one attempt, one prompt, its
  output, and every node's events once.

Each scenario's figures (how long the outage, what the user saw) go to test-artifacts/database-faults.txt
and into README "Fault matrix".
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
import redis
import requests
import websocket

from access.access_log import uvicorn_argv, web_server_argv
from devtools.processes import REPO, Process, free_port
from devtools.simulator_process import SimulatorProcess
from tests.factories import SLEEP_WORKFLOW
from tests.integration.private_postgres import PrivatePostgres, missing_reason
from tests.system import ARTIFACTS, RUN_PREFIX, CeleryWorker

pytestmark = [pytest.mark.integration]

DATABASE = "anime_faults"
PASSWORD = "pw-for-database-faults"
FINAL = {"completed", "failed", "cancelled"}
FIGURES = ARTIFACTS / "database-faults.txt"
# The machine's loopback, as the browser-less clients here send it (ALLOWED_HOSTS, Origin).
ORIGIN = "http://127.0.0.1"

_http = requests.Session()
_http.trust_env = False


@dataclass
class System:
    pg: PrivatePostgres
    web: str
    uvicorn: str  # the server `make run` and Docker start, beside the tests' daphne
    key: str
    worker: CeleryWorker
    media_root: Path
    sim: SimulatorProcess

    def sql(self, query: str, *params: Any) -> list[tuple]:
        with psycopg.connect(self.pg.url(DATABASE), connect_timeout=5) as connection:
            return connection.execute(query, params).fetchall()

    def submit(self, workflow: dict) -> requests.Response:
        return _http.post(
            f"{self.web}/api/jobs/",
            json={"workflow": workflow, "job_type": "image"},
            headers={"X-API-Key": self.key},
            timeout=30,
        )

    def wait_final(self, job_id: str, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.sql("SELECT status FROM jobs_job WHERE id = %s", job_id)
            if rows and rows[0][0] in FINAL:
                return rows[0][0]
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} not final after {timeout} s:\n{self.worker.log()[-3000:]}")


def sleep_workflow(seconds: float, prefix: str) -> dict:
    workflow = copy.deepcopy(SLEEP_WORKFLOW)
    workflow["2"]["inputs"]["seconds"] = seconds
    workflow["3"]["inputs"]["filename_prefix"] = prefix
    # A distinct colour per job, so ComfyUI's cache never serves one job from another.
    workflow["1"]["inputs"]["color"] = time.monotonic_ns() % 16_777_215
    return workflow


def manage(env: dict[str, str], *args: str) -> str:
    command = [sys.executable, str(REPO / "manage.py"), *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def record(scenario: str, lines: list[str]) -> None:
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    with FIGURES.open("a") as figures:
        figures.write(f"## {scenario} ({time.strftime('%Y-%m-%d %H:%M:%S')})\n" + "\n".join(lines) + "\n\n")


@pytest.fixture(scope="module")
def system(redis_of_this_run: None) -> Iterator[System]:
    reason = missing_reason()
    if reason:
        pytest.skip(f"no private PostgreSQL cluster can be started: {reason}")
    folder = Path(tempfile.mkdtemp(prefix="anime-faults-pg-"))
    folder.chmod(0o711)  # the cluster's own folder inside may belong to the `postgres` user
    pg = PrivatePostgres(folder / "cluster").init().start()
    processes: list[Any] = []
    try:
        pg.create_database(DATABASE)
        media_root = folder / "media"
        media_root.mkdir()
        sim = SimulatorProcess(output_dir=folder / "comfyui-output")
        sim.start()
        processes.append(sim)
        env = dict(
            os.environ,
            DATABASE_URL=pg.url(DATABASE),
            COMFYUI_URL=sim.url,
            MEDIA_ROOT=str(media_root),
            PYTHONUNBUFFERED="1",
        )
        env.pop("COMFYUI_BACKENDS", None)
        manage(env, "migrate", "--noinput")
        key = manage(
            env,
            "shell",
            "-c",
            "from django.contrib.auth import get_user_model; from access.keys import api_key_create; "
            f"u = get_user_model().objects.create_superuser('faults', 'faults@example.com', '{PASSWORD}'); "
            "print(api_key_create(user=u, name='faults').key)",
        ).split()[-1]
        worker = CeleryWorker(queue="gpu.default", env=env, log_path=folder / "gpu-worker.log")
        worker.start()
        processes.append(worker)
        port = free_port()
        web = Process(web_server_argv("127.0.0.1", port), env=env, log_path=folder / "web.log", name="daphne")
        url = f"http://127.0.0.1:{port}"
        web.start().wait_for_url(f"{url}/admin/login/", timeout=60)
        processes.append(web)
        port = free_port()
        uvicorn = Process(uvicorn_argv("127.0.0.1", port, 1), env=env, log_path=folder / "uvicorn.log", name="uvicorn")
        uvicorn_url = f"http://127.0.0.1:{port}"
        uvicorn.start().wait_for_url(f"{uvicorn_url}/admin/login/", timeout=60)
        processes.append(uvicorn)
        yield System(pg=pg, web=url, uvicorn=uvicorn_url, key=key, worker=worker, media_root=media_root, sim=sim)
    finally:
        for process in reversed(processes):
            process.stop()
        pg.destroy()
        shutil.rmtree(folder, ignore_errors=True)  # the media, the simulator's outputs, the logs


def admin_session(system: System) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.get(f"{system.web}/admin/login/", timeout=10)
    response = session.post(
        f"{system.web}/admin/login/?next=/admin/",
        data={
            "username": "faults",
            "password": PASSWORD,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
            "next": "/admin/",
        },
        headers={"Referer": f"{system.web}/admin/login/"},
        timeout=10,
    )
    assert response.status_code == 200 and "/admin/login/" not in response.url, response.text[:500]
    return session


def websocket_answer(system: System, server: str | None = None) -> tuple[str, int | None, str]:
    """Open the staff job list's websocket; what came back: ("open", None, first message),
    ("closed", close code, reason) or ("refused", HTTP status, message)."""
    ws = websocket.WebSocket()
    ws.settimeout(10)
    try:
        ws.connect(
            (server or system.web).replace("http", "ws", 1) + "/ws/jobs/",
            header=[f"X-API-Key: {system.key}"],
            origin=ORIGIN,
        )
    except websocket.WebSocketBadStatusException as exc:
        return "refused", exc.status_code, str(exc)
    try:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
            return "closed", code, data[2:].decode(errors="replace")
        return "open", None, data.decode(errors="replace")[:200]
    finally:
        ws.close()


def broker_messages(queue: str) -> int:
    client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    total = 0
    for name in client.scan_iter(f"{RUN_PREFIX}{queue}*"):
        if client.type(name) == b"list":
            total += cast(int, client.llen(name))
    return total


def test_postgres_down_at_submit_answers_503_and_makes_nothing(system: System) -> None:
    # The system works, and its processes hold database connections that the outage will break.
    first = system.submit(sleep_workflow(0.2, "before-outage"))
    assert first.status_code == 201, first.text
    assert system.wait_final(first.json()["id"]) == "completed"
    admin = admin_session(system)
    assert admin.get(f"{system.web}/admin/jobs/job/", timeout=10).status_code == 200
    answer = websocket_answer(system)
    assert answer[0] == "open", answer

    system.pg.stop()
    down_at = time.monotonic()
    try:
        started = time.monotonic()
        submitted = system.submit(sleep_workflow(0.2, "during-outage"))
        submit_ms = (time.monotonic() - started) * 1000
        listed = _http.get(f"{system.web}/api/jobs/", headers={"X-API-Key": system.key}, timeout=30)
        dashboard = admin.get(f"{system.web}/admin/jobs/job/", timeout=30)
        ws_answer = websocket_answer(system)
        uvicorn_submitted = _http.post(
            f"{system.uvicorn}/api/jobs/",
            json={"workflow": sleep_workflow(0.2, "during-outage"), "job_type": "image"},
            headers={"X-API-Key": system.key},
            timeout=30,
        )
        uvicorn_ws_answer = websocket_answer(system, system.uvicorn)
    finally:
        system.pg.start()
    up_at = time.monotonic()

    assert submitted.status_code == 503, submitted.text
    assert submitted.headers["Retry-After"].isdigit()
    assert submitted.json()["code"] == "database_unavailable"
    assert "nothing was saved" in submitted.json()["detail"]
    assert listed.status_code == 503 and listed.headers["Retry-After"].isdigit()
    assert dashboard.status_code == 503 and dashboard.headers["Retry-After"].isdigit()
    assert "database is unavailable" in dashboard.text
    assert ws_answer[:2] == ("closed", 4503), ws_answer  # daphne lets the application choose no status
    assert uvicorn_submitted.status_code == 503 and uvicorn_submitted.headers["Retry-After"].isdigit()
    assert uvicorn_ws_answer[:2] == ("refused", 503), uvicorn_ws_answer

    # Nothing half-made: the one job is the one from before; no message waits for a GPU worker.
    assert system.sql("SELECT count(*) FROM jobs_job")[0][0] == 1
    assert broker_messages("gpu.default") == 0

    # The same processes serve again, no restart: the first submit after the database is back.
    started = time.monotonic()
    while (again := system.submit(sleep_workflow(0.2, "after-outage"))).status_code == 503:
        assert time.monotonic() - started < 30, again.text
        time.sleep(0.2)
    recovered_s = time.monotonic() - up_at
    assert again.status_code == 201, again.text
    assert system.wait_final(again.json()["id"]) == "completed"
    assert admin.get(f"{system.web}/admin/jobs/job/", timeout=10).status_code == 200
    answer = websocket_answer(system)
    assert answer[0] == "open", answer
    assert websocket_answer(system, system.uvicorn)[0] == "open"
    record(
        "PostgreSQL down at submit",
        [
            f"outage: {up_at - down_at:.1f} s (pg_ctl stop -m fast ... start)",
            f"POST /api/jobs/: {submitted.status_code} Retry-After {submitted.headers['Retry-After']} "
            f"in {submit_ms:.0f} ms; GET /api/jobs/ {listed.status_code}; admin {dashboard.status_code}; "
            f"websocket {ws_answer[0]} {ws_answer[1]} (daphne), {uvicorn_ws_answer[0]} {uvicorn_ws_answer[1]} "
            f"(uvicorn; its POST {uvicorn_submitted.status_code})",
            "jobs made during the outage: 0; broker messages: 0",
            f"first 201 after the database was up: {recovered_s:.2f} s",
        ],
    )


def test_postgres_restarted_mid_job_the_job_completes_with_its_state_right(system: System) -> None:
    response = system.submit(sleep_workflow(8, "restart-mid-job"))
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    deadline = time.monotonic() + 60
    while system.sql("SELECT status FROM jobs_job WHERE id = %s", job_id)[0][0] != "running":
        assert time.monotonic() < deadline, system.worker.log()[-3000:]
        time.sleep(0.1)
    time.sleep(1)

    system.pg.stop()
    down_at = time.monotonic()
    time.sleep(5)
    system.pg.start()
    outage_s = time.monotonic() - down_at

    assert system.wait_final(job_id) == "completed"
    finished_s = time.monotonic() - down_at
    log = system.worker.log()
    # The tracker did meet the outage and rode it out (not a lucky gap between its writes).
    assert f"job {job_id}: the database is unavailable" in log
    assert f"job {job_id}: the database is back" in log

    ((attempts,),) = system.sql("SELECT count(*) FROM jobs_jobattempt WHERE job_id = %s", job_id)
    ((attempt, progress, error),) = system.sql(
        "SELECT attempt, progress, failure_category FROM jobs_job WHERE id = %s", job_id
    )
    assert (attempts, attempt, progress, error) == (1, 1, 1.0, "")
    history = _http.get(f"{system.sim.url}/history", timeout=10).json()
    assert [prompt for prompt in history if prompt.startswith(job_id)] == [job_id]  # one prompt: the job's id

    outputs = system.sql("SELECT file FROM jobs_joboutput WHERE job_id = %s", job_id)
    assert len(outputs) == 1 and (system.media_root / outputs[0][0]).stat().st_size > 0

    events = system.sql("SELECT seq, kind, node_id FROM jobs_jobevent WHERE job_id = %s ORDER BY seq", job_id)
    seqs = [seq for seq, _, _ in events]
    assert seqs == sorted(set(seqs)), "timeline numbers unique and in order"
    for node in ("1", "2", "3"):
        started = [e for e in events if e[1] == "node_started" and e[2] == node]
        finished = [e for e in events if e[1] == "node_finished" and e[2] == node]
        assert len(started) == 1 and len(finished) == 1, (node, events)
    assert [e[1] for e in events].count("output") == 1
    record(
        "PostgreSQL restarted mid-job",
        [
            f"outage: {outage_s:.1f} s, 1 s into an 8 s node (pg_ctl stop -m fast, 5 s, start)",
            f"job completed {finished_s:.1f} s after the database went down; 1 attempt, 1 prompt, 1 output, "
            f"{len(events)} events, each node's started/finished once",
            "tracker: "
            + " | ".join(line.split("]")[-1].strip() for line in log.splitlines() if "the database is" in line),
        ],
    )
    # The user's own view agrees (the API, through the web process that lived through the restart).
    body = _http.get(f"{system.web}/api/jobs/{job_id}/", headers={"X-API-Key": system.key}, timeout=10).json()
    assert body["status"] == "completed" and len(body["outputs"]) == 1
    assert json.dumps(body)  # a complete answer, not a 503
