"""What the Docker deployment publishes beyond the machine: only what other hosts need (the web's port
for users, MinIO's S3 API for GPU workers on other machines); consoles and dashboards, whose admin
passwords an env file copied from docker/env.example holds as placeholders, stay on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[2] / "docker"
# (service, container port) that other hosts must reach.
PUBLIC = {("web", "8000"), ("minio", "9000")}


def published(document: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(service, container port, the port entry as written) of every published port."""
    found = []
    for name, service in (document.get("services") or {}).items():
        for entry in service.get("ports") or []:
            text = str(entry["target"] if isinstance(entry, dict) else entry)
            found.append((name, text.rsplit(":", 1)[-1].split("/", maxsplit=1)[0], str(entry)))
    return found


def loopback_only(entry: str) -> bool:
    return entry.startswith(("127.0.0.1:", "[::1]:", "localhost:")) or "'host_ip': '127.0.0.1'" in entry


@pytest.mark.parametrize("file", ["compose.yaml", "compose.gpu.yaml"])
def test_only_the_web_and_the_s3_api_are_published_beyond_loopback(file):
    document = yaml.safe_load((DOCKER / file).read_text())
    exposed = [
        (name, port, entry)
        for name, port, entry in published(document)
        if (name, port) not in PUBLIC and not loopback_only(entry)
    ]
    assert exposed == [], f"{file} publishes these to every network: {exposed}"
