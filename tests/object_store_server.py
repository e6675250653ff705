"""A real S3-compatible server for the tests: moto's server mode, speaking S3 over HTTP on a free port.

On a thread of the test process (`ObjectStoreServer`, the unit tier: it can be stopped and started
again on the same port and keeps its objects, as a store that restarts would), or as a process of its
own (`moto_server_process`, the integration tier: the web server and the GPU worker reach it as they
would reach S3). Each test run makes a bucket of its own.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import requests

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ObjectStoreServer:
    """moto's S3 server on a thread of this process."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ObjectStoreServer:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        return self

    def stop(self) -> None:
        """Down: connections to its port are refused until start() (its objects stay in this process)."""
        if self._server is None:
            return
        self._server.stop()
        self._server._server.server_close()
        self._server = None

    @property
    def running(self) -> bool:
        return self._server is not None


def bucket_create(endpoint: str, bucket: str | None = None) -> str:
    bucket = bucket or f"anime-test-{uuid.uuid4().hex[:16]}"
    s3_client(endpoint).create_bucket(Bucket=bucket)
    return bucket


def s3_client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def bucket_keys(endpoint: str, bucket: str) -> list[str]:
    answer = s3_client(endpoint).list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in answer.get("Contents", []))


def storages_setting(endpoint: str, bucket: str) -> dict[str, dict[str, Any]]:
    """settings.STORAGES as AWS_STORAGE_BUCKET_NAME and AWS_S3_ENDPOINT_URL make it."""
    return {
        "default": {
            "BACKEND": "assets.object_store.ObjectStore",
            "OPTIONS": {
                "bucket_name": bucket,
                "endpoint_url": endpoint,
                "region_name": REGION,
                "access_key": CREDENTIALS["AWS_ACCESS_KEY_ID"],
                "secret_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                "addressing_style": "path",
                "signature_version": "s3v4",
                "default_acl": None,
                "querystring_auth": True,
                "querystring_expire": 60,
                "file_overwrite": True,
            },
        },
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


def process_environment(endpoint: str, bucket: str) -> dict[str, str]:
    """The environment that puts a process's files in the bucket (README "Files and storage")."""
    return {
        "AWS_STORAGE_BUCKET_NAME": bucket,
        "AWS_S3_ENDPOINT_URL": endpoint,
        "AWS_S3_REGION_NAME": REGION,
        "AWS_S3_ADDRESSING_STYLE": "path",
        **CREDENTIALS,
    }


class MotoProcess:
    """moto's S3 server as a process of its own, on one port for its life: stop() refuses connections
    as a store that is down does; start() again is a store back, empty (moto keeps objects in memory)."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_path = log_dir / "moto_server.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoProcess:
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(self.endpoint, timeout=5)
                return self
            except requests.RequestException:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start; see {self.log_path}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None


@contextmanager
def moto_server_process(log_dir: Path) -> Iterator[str]:
    """moto's S3 server as a process of its own; yields its endpoint."""
    server = MotoProcess(log_dir).start()
    try:
        yield server.endpoint
    finally:
        server.stop()
