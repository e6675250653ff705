"""The Docker deployment, checked without a Docker daemon (none here, none in CI): docker/compose.yaml and
the generated docker/compose.gpu.yaml against the Compose Specification's JSON schema (vendored in
docker/compose-spec/) and the project's own rules; each rule is shown failing on a broken copy.
`make docker-check` runs this file after hadolint."""

from __future__ import annotations

import copy
import json
import re
import runpy
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no types-jsonschema in the dev lock
import pytest
import yaml

from access.access_log import uvicorn_argv
from devtools.compose_files import (
    DOCKER,
    env_file_read,
    gpu_workers_module,
    interpolate,
    load,
    resolved_services,
    variables_used,
)
from fleet.workers import default_worker_args, gpu_worker_args, webhook_worker_args

SETTINGS = DOCKER.parent / "anime_production" / "settings.py"
# What each worker service runs and the Celery node name its health check pings.
WORKER_NODES = {
    ("run_worker", "default"): default_worker_args(),
    ("run_worker", "webhooks"): webhook_worker_args(1),
}


def schema_errors(document: dict[str, Any]) -> list[str]:
    schema = json.loads((DOCKER / "compose-spec" / "compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(document)]


def undeclared_variables(documents: list[dict[str, Any]], env: dict[str, str]) -> set[str]:
    return set().union(*(variables_used(document) for document in documents)) - set(env)


def runpy_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """anime_production/settings.py run afresh, in this process, with env as the environment."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("COMFYUI_URL", raising=False)
    return runpy.run_path(str(SETTINGS))


def settings_backends(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The backend names anime_production/settings.py reads from env."""
    return list(runpy_settings(env, monkeypatch)["COMFYUI_BACKENDS"])


def gpu_worker_problems(services: dict[str, dict[str, Any]], backends: list[str]) -> list[str]:
    """Every backend has exactly one GPU worker, consuming its queue, pinged by its Celery node name."""
    problems: list[str] = []
    served: list[str] = []
    for name, service in services.items():
        command = service.get("command") or []
        if command[1:3] != ["run_worker", "gpu"]:
            continue
        backend = command[3]
        served.append(backend)
        if backend not in backends:
            problems.append(f"{name}: a GPU worker for {backend!r}, which COMFYUI_BACKENDS does not name")
        node = gpu_worker_args(backend)[gpu_worker_args(backend).index("-n") + 1].replace("%h", "$$HOSTNAME")
        if f"-d {node}" not in " ".join(service.get("healthcheck", {}).get("test", [])):
            problems.append(f"{name}: its health check does not ping the worker's node {node}")
        if service.get("depends_on") != services["default-worker"].get("depends_on"):
            problems.append(f"{name}: does not wait for what the other workers wait for (depends_on)")
    problems += [f"backend {b!r} has no GPU worker" for b in backends if b not in served]
    problems += [f"backend {b!r} has {served.count(b)} GPU workers" for b in set(served) if served.count(b) > 1]
    return problems


def health_and_restart_problems(services: dict[str, dict[str, Any]]) -> list[str]:
    """Every long-running service has a health check and restarts; a one-shot (restart "no") is waited
    for by its dependants as completed, and its health is not a thing."""
    problems: list[str] = []
    for name, service in services.items():
        restart = service.get("restart")
        if restart == "no":
            waiters = [
                other
                for other, spec in services.items()
                if isinstance(spec.get("depends_on"), dict) and name in spec["depends_on"]
            ]
            if not waiters:
                problems.append(f"{name}: a one-shot service nothing waits for")
            problems += [
                f"{other}: waits for the one-shot {name} without service_completed_successfully"
                for other in waiters
                if services[other]["depends_on"][name].get("condition") != "service_completed_successfully"
            ]
            continue
        if restart not in {"always", "unless-stopped", "on-failure"}:
            problems.append(f"{name}: restart policy {restart!r}")
        healthcheck = service.get("healthcheck", {})
        if not healthcheck.get("test") or healthcheck.get("disable"):
            problems.append(f"{name}: no health check")
    return problems


def worker_health_problems(services: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    for name, service in services.items():
        args = WORKER_NODES.get(tuple((service.get("command") or [])[1:3]))
        if args is None:
            continue
        node = args[args.index("-n") + 1].replace("%h", "$$HOSTNAME")
        if f"-d {node}" not in " ".join(service.get("healthcheck", {}).get("test", [])):
            problems.append(f"{name}: its health check does not ping the worker's node {node}")
    return problems


def web_command_problems(services: dict[str, dict[str, Any]], env: dict[str, str]) -> list[str]:
    """The web service serves as README "Serving" chose: uvicorn_argv, WEB_WORKERS processes, port 8000."""
    command = [interpolate(part, env) for part in services["web"]["command"]]
    expected = ["python", *uvicorn_argv("0.0.0.0", 8000, int(env["WEB_WORKERS"]))[1:]]
    return [] if command == expected else [f"web: command {command} is not uvicorn_argv's {expected}"]


def dockerfile_user_problems(dockerfile: str) -> list[str]:
    """The final stage switches to a numeric non-root user (and nothing after switches back)."""
    final_stage = re.split(r"(?im)^FROM\s", dockerfile)[-1]
    users = re.findall(r"(?im)^USER\s+(\S+)", final_stage)
    if not users:
        return ["the image runs as root: no USER in its final stage"]
    user = users[-1].split(":")[0]
    if user in {"root", "0"}:
        return [f"the image runs as root (USER {users[-1]})"]
    if not user.isdigit():
        return [f"USER {users[-1]}: by number, so runAsNonRoot can verify it"]
    return []


# --- The files as they are --------------------------------------------------------------------------------


@pytest.fixture
def compose() -> dict[str, Any]:
    return load("compose.yaml")


@pytest.fixture
def compose_gpu() -> dict[str, Any]:
    return load("compose.gpu.yaml")


def test_compose_files_are_valid_compose_specification(compose: dict[str, Any], compose_gpu: dict[str, Any]) -> None:
    assert schema_errors(compose) == []
    assert schema_errors(compose_gpu) == []


def test_every_variable_compose_uses_is_in_env_example(compose: dict[str, Any], compose_gpu: dict[str, Any]) -> None:
    env = env_file_read()
    assert undeclared_variables([compose, compose_gpu], env) == set()
    # And they interpolate: none of the required ones (${VAR:?}) is empty in the example.
    for service in compose["services"].values():
        for part in service.get("command") or []:
            interpolate(part, env)


def test_generated_gpu_workers_are_current_with_env_file_read() -> None:
    gpu_workers = gpu_workers_module()
    assert gpu_workers.main(["--env-file", str(DOCKER / "env.example"), "--check"]) == 0


def test_one_gpu_worker_per_backend_settings_name(
    compose: dict[str, Any], compose_gpu: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    backends = settings_backends(env_file_read(), monkeypatch)
    assert len(backends) >= 2, "the example shows more than one GPU machine"
    assert gpu_worker_problems(resolved_services(compose, compose_gpu), backends) == []
    # The generator reads the list as settings.py does.
    assert gpu_workers_module().backend_names(env_file_read()["COMFYUI_BACKENDS"]) == backends


def test_every_service_has_a_health_check_and_a_restart_policy(
    compose: dict[str, Any], compose_gpu: dict[str, Any]
) -> None:
    services = resolved_services(compose, compose_gpu)
    assert health_and_restart_problems(services) == []
    assert worker_health_problems(services) == []


def test_web_serves_as_the_readme_chose(compose: dict[str, Any]) -> None:
    assert web_command_problems(compose["services"], env_file_read()) == []
    assert "uvicorn, two processes on one port" in (DOCKER.parent / "README.md").read_text()


def test_image_runs_as_a_non_root_user(compose: dict[str, Any]) -> None:
    assert dockerfile_user_problems((DOCKER / "Dockerfile").read_text()) == []
    assert all(service.get("user") in {None} for service in compose["services"].values())


def test_migrations_run_once_before_the_processes_that_use_the_database(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["migrate"]["command"] == ["django-admin", "migrate", "--noinput"]
    users_of_the_database = [name for name, service in services.items() if service.get("image") == "anime-production"]
    for name in set(users_of_the_database) - {"migrate"}:
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name
        assert "migrate" not in " ".join(map(str, services[name]["command"])), name


def test_every_process_keeps_its_files_in_the_object_store(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No two containers share a disk: the settings every app service gets switch storage to the
    minio service's bucket, with the key storage-setup makes."""
    env = env_file_read()
    services = compose["services"]
    app_environment = {k: interpolate(str(v), env) for k, v in services["web"]["environment"].items()}
    assert all(services[name]["environment"] == services["web"]["environment"] for name in ("beat", "migrate"))
    mounts = [volume.split(":")[1] for volume in services["web"].get("volumes", [])]
    assert "/app/media" not in mounts, "a shared media volume is what the object store replaces"
    stored = runpy_settings({**env, **app_environment}, monkeypatch)["STORAGES"]["default"]
    assert stored["BACKEND"] == "assets.object_store.ObjectStore"
    assert stored["OPTIONS"]["bucket_name"] == env["S3_BUCKET"]
    assert stored["OPTIONS"]["endpoint_url"] == "http://minio:9000"
    setup = " ".join(services["storage-setup"]["command"])
    assert all(f"$${name}" in setup for name in ("S3_BUCKET", "S3_ACCESS_KEY", "S3_SECRET_KEY"))


# --- Each rule fails on a broken copy ----------------------------------------------------------------------


def test_schema_refuses_a_broken_compose_file(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["web"]["restart"] = ["unless-stopped"]
    broken["services"]["redis"]["helthcheck"] = broken["services"]["redis"].pop("healthcheck")
    errors = schema_errors(broken)
    assert any(error.startswith("services/web/restart") for error in errors), errors
    assert any("helthcheck" in error for error in errors), errors


def test_a_variable_missing_from_env_example_is_named(compose: dict[str, Any], compose_gpu: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["web"]["environment"] = {"SENTRY_DSN": "${SENTRY_DSN}", "LITERAL": "$$NOT_A_VARIABLE"}
    assert undeclared_variables([broken, compose_gpu], env_file_read()) == {"SENTRY_DSN"}


def test_a_stale_generated_file_is_refused(tmp_path: Path) -> None:
    env = (DOCKER / "env.example").read_text()
    env_file = tmp_path / "env"
    env_file.write_text(env.replace("COMFYUI_BACKENDS=", "COMFYUI_BACKENDS=gpu9=http://comfyui-9:8188,"))
    gpu_workers = gpu_workers_module()
    assert gpu_workers.main(["--env-file", str(env_file), "--output", str(DOCKER / "compose.gpu.yaml"), "--check"]) == 1
    output = tmp_path / "compose.gpu.yaml"
    assert gpu_workers.main(["--env-file", str(env_file), "--output", str(output)]) == 0
    assert "gpu-worker-gpu9:" in output.read_text()
    assert schema_errors(yaml.safe_load(output.read_text())) == []


@pytest.mark.parametrize(
    ("backends", "message"),
    [
        ("gpu1=http://a:8188,gpu1=http://b:8188", "named twice"),
        ("gpu 1=http://a:8188", "letters, digits"),
        ("gpu1", "not name=URL"),
        ("", "names no backend"),
    ],
)
def test_the_generator_refuses_a_bad_backend_list(backends: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gpu_workers_module().backend_names(backends)


def test_gpu_workers_not_matching_the_backends_are_named(
    compose: dict[str, Any], compose_gpu: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    backends = settings_backends(env_file_read(), monkeypatch)
    services = resolved_services(compose, compose_gpu)
    missing = {k: v for k, v in services.items() if k != "gpu-worker-gpu2"}
    assert gpu_worker_problems(missing, backends) == ["backend 'gpu2' has no GPU worker"]
    stray = copy.deepcopy(services)
    stray["gpu-worker-gpu2"]["command"][3] = "gpu3"
    assert "a GPU worker for 'gpu3'" in " ".join(gpu_worker_problems(stray, backends))
    twice = {**services, "gpu-worker-again": services["gpu-worker-gpu1"]}
    assert gpu_worker_problems(twice, backends) == ["backend 'gpu1' has 2 GPU workers"]
    unwaited = copy.deepcopy(services)
    del unwaited["gpu-worker-gpu1"]["depends_on"]
    assert gpu_worker_problems(unwaited, backends) == [
        "gpu-worker-gpu1: does not wait for what the other workers wait for (depends_on)"
    ]


def test_missing_health_checks_and_restart_policies_are_named(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose["services"])
    del broken["beat"]["healthcheck"]
    broken["redis"]["restart"] = "sometimes"
    broken["web"]["healthcheck"] = {"disable": True}
    broken["default-worker"]["healthcheck"]["test"] = ["CMD-SHELL", "celery inspect ping -d gpu-x@$$HOSTNAME"]
    broken["beat"]["depends_on"] = {**broken["beat"]["depends_on"], "migrate": {"condition": "service_started"}}
    broken["migrate-twice"] = {**broken["migrate"], "restart": "no"}
    problems = health_and_restart_problems(broken) + worker_health_problems(broken)
    assert sorted(problems) == sorted(
        [
            "beat: no health check",
            "web: no health check",
            "redis: restart policy 'sometimes'",
            "migrate-twice: a one-shot service nothing waits for",
            "beat: waits for the one-shot migrate without service_completed_successfully",
            "default-worker: its health check does not ping the worker's node default@$$HOSTNAME",
        ]
    )


def test_a_web_command_other_than_the_readme_choice_is_named(compose: dict[str, Any]) -> None:
    env = env_file_read()
    daphne = copy.deepcopy(compose["services"])
    daphne["web"]["command"] = ["daphne", "-b", "0.0.0.0", "-p", "8000", "anime_production.asgi:application"]
    assert web_command_problems(daphne, env) != []
    one_process = copy.deepcopy(compose["services"])
    one_process["web"]["command"][one_process["web"]["command"].index("--workers") + 1] = "1"
    assert web_command_problems(one_process, env) != []


@pytest.mark.parametrize(
    ("user_lines", "problem"),
    [
        ("", "no USER"),
        ("USER 10001\nUSER root\n", "runs as root"),
        ("USER 0:0\n", "runs as root"),
        ("USER app\n", "by number"),
    ],
)
def test_a_root_image_is_named(user_lines: str, problem: str) -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    broken = re.sub(r"(?m)^USER .*\n", "", dockerfile).replace("WORKDIR /app\n", f"WORKDIR /app\n{user_lines}")
    problems = dockerfile_user_problems(broken)
    assert len(problems) == 1 and problem in problems[0], problems
