"""The Docker deployment's files read as Compose reads them: the env file, `${VAR}` interpolation and
`extends`. One reading for the checks that have no Docker to ask (tests/unit/test_docker_deployment.py)
and the rehearsal that runs the services as processes (devtools/compose_rehearsal.py)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

DOCKER = Path(__file__).resolve().parent.parent / "docker"
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error} and $VAR; `$$` is a literal `$`.
VARIABLE = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def gpu_workers_module() -> ModuleType:
    """docker/gpu_workers.py (a script, not a package: the generator of compose.gpu.yaml)."""
    spec = importlib.util.spec_from_file_location("gpu_workers", DOCKER / "gpu_workers.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def env_file_read(path: Path = DOCKER / "env.example") -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.lstrip().startswith("#"):
            values[key.strip()] = value.strip()
    return values


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((DOCKER / name).read_text())


def interpolate(value: str, env: dict[str, str]) -> str:
    """A Compose value with env's variables put in, as `docker compose config` would."""

    def one(match: re.Match[str]) -> str:
        name = match["braced"] or match["bare"]
        op, arg = match["op"] or "", match["arg"] or ""
        # With a colon, empty counts as unset.
        unset = not env.get(name) if op.startswith(":") else name not in env
        if unset and op.endswith("-"):
            return arg
        if unset and op.endswith("?"):
            raise ValueError(f"{name}: {arg}")
        return env.get(name, "")

    return "$".join(VARIABLE.sub(one, part) for part in value.split("$$"))


def interpolated(node: Any, env: dict[str, str]) -> Any:
    """`interpolate` over every string of a loaded Compose document."""
    if isinstance(node, dict):
        return {key: interpolated(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolated(item, env) for item in node]
    return interpolate(node, env) if isinstance(node, str) else node


def variables_used(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set().union(*(variables_used(value) for value in node.values()), set())
    if isinstance(node, list):
        return set().union(*(variables_used(item) for item in node), set())
    if isinstance(node, str):
        return {m["braced"] or m["bare"] for part in node.split("$$") for m in VARIABLE.finditer(part)}
    return set()


def resolved_services(base: dict[str, Any], override: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Both files' services, each `extends: {file: compose.yaml}` resolved as Compose does (its mappings
    merged key by key, depends_on never taken from the extended service)."""
    services = {name: dict(service) for name, service in base["services"].items()}
    for name, service in override["services"].items():
        merged = dict(service)
        if "extends" in service:
            assert service["extends"]["file"] == "compose.yaml"
            parent = {k: v for k, v in base["services"][service["extends"]["service"]].items() if k != "depends_on"}
            merged = {**parent, **{k: v for k, v in service.items() if k != "extends"}}
            for key in ("healthcheck", "environment"):
                if key in parent and key in service:
                    merged[key] = {**parent[key], **service[key]}
        services[name] = merged
    return services
