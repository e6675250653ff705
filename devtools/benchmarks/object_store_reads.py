"""What one HTTP Range read of a large stored file costs on S3: the project's ranged GET
(assets.object_store.stored_chunks, as downloads and seeks use it) against django-storages' own
S3File (seek + read, which downloads the whole object first). The store is moto's S3 server as a
process of its own on loopback: `python -m devtools.benchmarks.object_store_reads [MiB]` (default 256).

Prints figures; asserts nothing. Peak RSS is this process's (the server's memory is its own).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import django
import requests

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "anime_production.settings")
django.setup()

from storages.backends.s3 import S3Storage  # noqa: E402  (after the apps are loaded)

from assets.object_store import ObjectStore, stored_chunks  # noqa: E402
from devtools.processes import free_port  # noqa: E402

READ_BYTES = 64 * 1024
CREDENTIALS = {"access_key": "bench", "secret_key": "bench"}


def peak_rss_mib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def moto_server(port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}", timeout=5)
            return server
        except requests.RequestException:
            time.sleep(0.1)
    server.terminate()
    raise SystemExit("moto_server did not start")


def main() -> None:
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    port = free_port()
    server = moto_server(port)
    endpoint = f"http://127.0.0.1:{port}"
    options = dict(bucket_name="bench", endpoint_url=endpoint, region_name="us-east-1", addressing_style="path")
    try:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        client.create_bucket(Bucket="bench")
        with tempfile.TemporaryDirectory() as work:
            big = Path(work, "big.bin")
            with big.open("wb") as out:
                for _ in range(mib):
                    out.write(os.urandom(1024 * 1024))
            client.upload_file(str(big), "bench", "big.bin")
        offset = mib * 1024 * 1024 // 2
        project = ObjectStore(**options, **CREDENTIALS)
        b"".join(stored_chunks(project, "big.bin", 0, 1023))  # connect once before timing
        before = peak_rss_mib()
        started = time.monotonic()
        part = b"".join(stored_chunks(project, "big.bin", offset, offset + READ_BYTES - 1))
        ranged = time.monotonic() - started
        print(
            f"ranged GET, {len(part) // 1024} KiB at {offset >> 20} MiB of a {mib} MiB object: "
            f"{ranged * 1000:.0f} ms, peak RSS {before} -> {peak_rss_mib()} MiB"
        )
        before = peak_rss_mib()
        started = time.monotonic()
        with S3Storage(**options, **CREDENTIALS).open("big.bin", "rb") as handle:
            handle.seek(offset)
            data = handle.read(READ_BYTES)
        whole = time.monotonic() - started
        print(
            f"django-storages S3File seek + read of the same {len(data) // 1024} KiB: "
            f"{whole * 1000:.0f} ms, peak RSS {before} -> {peak_rss_mib()} MiB"
        )
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
