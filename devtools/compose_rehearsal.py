"""docker/compose.yaml rehearsed where no container engine runs: every service built from the
project's image started as a process of this machine, with the command, the environment and the
health check that Compose would give it, then one job through the front door to its stored output.

    .venv/bin/python -m devtools.compose_rehearsal [--env-file docker/env.example] [--keep]

What it proves: the commands exist and start (migrate, web, the default and webhooks workers, beat,
one GPU worker per backend of compose.gpu.yaml), the env file and the `environment:` block make
settings that load, each health check passes, and a job submitted through the web service runs on a
GPU worker whose outputs go to the S3-compatible store (no shared disk: each process has a working
directory of its own) and come back as a download through the web service.

What it does not: the image build (hadolint checks the Dockerfile; `make docker-check`), the
third-party images (PostgreSQL, Redis and MinIO are this machine's services and moto's S3 server),
container networking and volumes. Only what it must is rewritten, and the report lists it: the
service names `postgres`, `redis` and `minio` become this machine's addresses, `/app` a folder of
its own per service, the web container's port 8000 a free one, the ComfyUI URLs simulators, and the
Redis database and the PostgreSQL database its own.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.benchmarks.progress_latency import sleep_workflow
from devtools.compose_files import DOCKER, env_file_read, gpu_workers_module, interpolated, load, resolved_services
from devtools.processes import Process, free_port
from devtools.simulator_process import SimulatorProcess

DATABASE = "anime_compose_rehearsal"
HEALTH_TIMEOUT = 120.0
JOB_TIMEOUT = 120.0


def dockerfile_environment() -> dict[str, str]:
    """The ENV of the Dockerfile's last stage (the image the services run)."""
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    stage = text.rsplit("\nFROM ", 1)[-1]
    values = {}
    for line in stage.splitlines():
        if line.startswith("ENV "):
            for pair in line[4:].split():
                name, value = pair.split("=", 1)
                values[name] = value
    return values


def project_services(variables: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The services that run the project's image, from compose.yaml and compose.gpu.yaml, with
    `extends` applied and variables interpolated."""
    services = resolved_services(load("compose.yaml"), load("compose.gpu.yaml"))
    return {name: interpolated(s, variables) for name, s in services.items() if s.get("image") == "anime-production"}


@dataclass
class Rehearsal:
    work: Path
    env_file: dict[str, str]
    object_store: str
    redis_db: str
    simulators: dict[str, SimulatorProcess]
    image_environment: dict[str, str] = field(default_factory=dockerfile_environment)
    processes: dict[str, Process] = field(default_factory=dict)

    def environment(self, name: str, service: dict[str, Any]) -> dict[str, str]:
        home = self.work / name
        (home / "var" / "metrics").mkdir(parents=True, exist_ok=True)
        (home / "media").mkdir(parents=True, exist_ok=True)
        env = {"PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        env["HOSTNAME"] = socket.gethostname()  # in a container, its own name; celery's %h
        env.update(self.image_environment)
        env.update(self.env_file)
        env.update({key: str(value) for key, value in (service.get("environment") or {}).items()})
        env["COMFYUI_BACKENDS"] = ",".join(f"{name}={simulator.url}" for name, simulator in self.simulators.items())
        return {key: _app_path(self._local(value), home) for key, value in env.items()}

    def _local(self, value: str) -> str:
        """The addresses of Compose's services, as this machine's."""
        value = re.sub(r"@postgres:5432/[A-Za-z0-9_]+", f"@127.0.0.1:5432/{DATABASE}", value)
        value = value.replace("redis://redis:6379/0", f"redis://127.0.0.1:6379/{self.redis_db}")
        return value.replace("http://minio:9000", self.object_store)

    def start(self, name: str, service: dict[str, Any]) -> Process:
        argv = [_app_path(part, self.work / name) for part in service["command"]]
        env = self.environment(name, service)
        process = Process(argv, log_path=self.work / f"{name}.log", env=env, cwd=self.work / name, name=name)
        self.processes[name] = process.start()
        return process

    def healthy(self, name: str, service: dict[str, Any]) -> bool:
        test = service["healthcheck"]["test"]
        env = self.environment(name, service)
        if test[0] == "CMD-SHELL":
            argv = ["sh", "-c", _app_path(test[1], self.work / name)]
        else:
            argv = [_app_path(part, self.work / name) for part in test[1:]]
        try:
            done = subprocess.run(argv, env=env, cwd=self.work / name, capture_output=True, timeout=40, check=False)
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop(grace=30)


def _app_path(value: str, home: Path) -> str:
    return re.sub(r"(?<![\w.])/app(?=/|\b)", str(home), value)


def database_prepare() -> None:
    def psql(sql: str, database: str = "postgres") -> None:
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-qc", sql], check=True)

    role = "SELECT FROM pg_roles WHERE rolname = 'anime'"
    psql(f"DO $$ BEGIN IF NOT EXISTS ({role}) THEN CREATE ROLE anime LOGIN; END IF; END $$")
    database_drop()
    psql(f"CREATE DATABASE {DATABASE} OWNER anime")


def database_drop() -> None:
    drop = f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", drop], check=True, capture_output=True)


def object_store_start(bucket: str) -> tuple[Any, str]:
    """moto's S3 server, with the bucket storage-setup makes."""
    from moto.server import ThreadedMotoServer

    port = free_port("127.0.0.1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    _s3(endpoint).create_bucket(Bucket=bucket)
    return server, endpoint


def objects_in(endpoint: str, bucket: str) -> list[str]:
    return [item["Key"] for item in _s3(endpoint).list_objects_v2(Bucket=bucket).get("Contents", [])]


def _s3(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )


def http(method: str, url: str, key: str, body: Any = None) -> tuple[int, bytes, str]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("X-API-Key", key)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers.get("Content-Type", "")


def api_key_make(env: dict[str, str]) -> str:
    """A user and key, made with the web service's settings (what `createsuperuser` would do)."""
    os.environ.update(env)
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    from access.keys import api_key_create

    user = get_user_model().objects.create_user(f"rehearsal-{uuid.uuid4().hex[:8]}")
    return api_key_create(user=user, name="compose rehearsal").key


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-file", type=Path, default=DOCKER / "env.example")
    parser.add_argument("--keep", action="store_true", help="keep the logs and the database")
    args = parser.parse_args(argv)

    env_file = env_file_read(args.env_file)
    env_file["SECRET_KEY"] = secrets.token_urlsafe(32)  # the example's placeholder, replaced as a studio would
    services = project_services({**os.environ, **env_file})
    work = Path(tempfile.mkdtemp(prefix="compose-rehearsal-"))
    backends = gpu_workers_module().backend_names(env_file["COMFYUI_BACKENDS"])
    simulators = {name: SimulatorProcess(output_dir=work / f"comfyui-{name}") for name in backends}
    # The web container's port 8000 is a free port here (a `make run` may hold 8000 on this machine).
    web_port = free_port("127.0.0.1")
    services["web"] = json.loads(re.sub(r"\b8000\b", str(web_port), json.dumps(services["web"])))

    database_prepare()
    store, endpoint = object_store_start(env_file["S3_BUCKET"])
    rehearsal = Rehearsal(work, env_file, endpoint, redis_db="13", simulators=simulators)
    subprocess.run(["redis-cli", "-n", "13", "flushdb"], check=True, capture_output=True)
    report: list[str] = [
        f"rewritten: postgres -> 127.0.0.1:5432/{DATABASE}, redis -> 127.0.0.1:6379/13, minio -> {endpoint} (moto), "
        f"/app -> {work}/<service>, web's port 8000 -> {web_port}, "
        f"COMFYUI_BACKENDS -> simulators ({', '.join(backends)})"
    ]
    began = time.monotonic()
    try:
        for simulator in simulators.values():
            simulator.start()
        # compose: migrate runs once and completes before every other project service starts.
        status = rehearsal.start("migrate", services["migrate"]).wait(300)
        report.append(f"migrate: exited {status} after {time.monotonic() - began:.1f} s")
        if status:
            raise SystemExit(f"migrate failed: {work / 'migrate.log'}")
        long_running = [name for name in services if name != "migrate"]
        for name in long_running:
            rehearsal.start(name, services[name])
        started = time.monotonic()
        waiting = set(long_running)
        while waiting and time.monotonic() - started < HEALTH_TIMEOUT:
            for name in sorted(waiting):
                if not rehearsal.processes[name].alive():
                    raise SystemExit(f"{name} exited: {work / (name + '.log')}")
                if rehearsal.healthy(name, services[name]):
                    waiting.discard(name)
                    report.append(
                        f"{name}: healthy {time.monotonic() - started:.1f} s after start ({_argv(services[name])})"
                    )
            time.sleep(1)
        if waiting:
            raise SystemExit(f"not healthy in {HEALTH_TIMEOUT:.0f} s: {sorted(waiting)}")

        key = api_key_make(rehearsal.environment("web", services["web"]))
        base = f"http://127.0.0.1:{web_port}"
        workflow = sleep_workflow(1.0, 0x336699)
        for backend in backends:
            code, body, _ = http(
                "POST", f"{base}/api/jobs/", key, {"workflow": workflow, "job_type": "image", "backend": backend}
            )
            if code != 201:
                raise SystemExit(f"POST /api/jobs/ answered {code}: {body[:300]!r}")
            job = json.loads(body)
            deadline = time.monotonic() + JOB_TIMEOUT
            while job["status"] not in ("completed", "failed", "cancelled") and time.monotonic() < deadline:
                time.sleep(0.5)
                job = json.loads(http("GET", f"{base}/api/jobs/{job['id']}/", key)[1])
            if job["status"] != "completed":
                raise SystemExit(f"job on {backend} ended {job['status']}: {job.get('error')}")
            output = job["outputs"][0]
            code, content, media_type = http("GET", base + output["download_url"], key)
            if code != 200 or not content.startswith(b"\x89PNG"):
                raise SystemExit(f"download of {output['download_url']}: {code} {media_type} {content[:16]!r}")
            report.append(
                f"job on {backend} ({job['backend']}): completed; its output downloaded through web: "
                f"{len(content)} bytes, {media_type}"
            )
        stored = objects_in(endpoint, env_file["S3_BUCKET"])
        media = [p for p in work.glob("*/media/**/*") if p.is_file()]
        report.append(f"object store: {len(stored)} objects; files under the services' own media folders: {len(media)}")
    finally:
        rehearsal.stop()
        for simulator in simulators.values():
            simulator.stop()
        store.stop()
        print("\n".join(report))
        print(f"logs: {work}" if args.keep else "")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
            database_drop()


def _argv(service: dict[str, Any]) -> str:
    return " ".join(service["command"])[:70]


if __name__ == "__main__":
    main()
