"""What one tracked job costs: ComfyUI messages in, database writes and channel-layer broadcasts out.

Runs the real tracker in this process against the ComfyUI simulator, on the configured database
and Redis, and counts every INSERT/UPDATE/DELETE statement and write transaction the job causes
(Django's execute wrapper) and every broadcast handed to the channel layer.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/anime_bench_counts \\
        .venv/bin/python -m devtools.benchmarks.job_write_counts --seconds 1.5 --seconds 3 --seconds 10

`--seconds` is how long the job's sampling node runs; ComfyUI's TestSleep reports progress about
every 10 ms, each time as a `progress` and a `progress_state` message.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import time
import uuid
from typing import Any
from unittest import mock

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "anime_production.settings")
os.environ.setdefault("CELERY_KEY_PREFIX", f"bench-{os.getpid()}-")
os.environ.setdefault("CHANNEL_LAYER_PREFIX", f"bench-{os.getpid()}-asgi")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from devtools.simulator_process import SimulatorProcess  # noqa: E402
from jobs import broadcast, services, tracking  # noqa: E402
from jobs.models import Job  # noqa: E402

WRITE_VERBS = ("INSERT", "UPDATE", "DELETE")


class WriteCounter:
    def __init__(self) -> None:
        self.statements: collections.Counter[str] = collections.Counter()
        self.transactions = 0

    def __call__(self, execute, sql, params, many, context):
        verb = sql.lstrip().split(" ", 1)[0].upper()
        if verb in WRITE_VERBS:
            table = sql.split('"')[1] if '"' in sql else "?"
            self.statements[f"{verb} {table}"] += 1
        return execute(sql, params, many, context)


def run_job(seconds: float) -> dict[str, Any]:
    workflow = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": random.randrange(1 << 24)},
        },
        "2": {"class_type": "TestSleep", "inputs": {"value": ["1", 0], "seconds": seconds}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "bench"}},
    }
    job = Job.objects.create(id=uuid.uuid4(), backend="default", job_type="image", workflow=workflow)
    counter = WriteCounter()
    sent = []
    real_broadcast = broadcast.job_broadcast

    def counting_broadcast(state, user_id, events=(), **options):
        sent.append(len(events))
        real_broadcast(state, user_id, events, **options)

    message_types: collections.Counter[str] = collections.Counter()
    real_apply = tracking.JobProgress.apply

    def counting_apply(progress, message):
        message_types[message.type] += 1
        return real_apply(progress, message)

    with (
        mock.patch.object(services, "job_broadcast", counting_broadcast),
        mock.patch.object(tracking.JobProgress, "apply", counting_apply),
    ):
        started = time.monotonic()
        # Count from the end of the (committed) insert above: only what following the job costs.
        with connection.execute_wrapper(counter):
            tracking.job_track(str(job.id))
        elapsed = time.monotonic() - started
    job.refresh_from_db()
    writes = sum(counter.statements.values())
    return {
        "status": job.status,
        "elapsed": elapsed,
        "progress": message_types["progress"],
        "progress_state": message_types["progress_state"],
        "all_messages": sum(message_types.values()),
        "write_statements": writes,
        "by_table": dict(counter.statements),
        "broadcasts": len(sent),
        "events": job.events.count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, action="append", help="sampling time of the job (repeatable)")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    with SimulatorProcess() as sim:
        settings.COMFYUI_BACKENDS = {"default": sim.url}
        rows = [run_job(seconds) for seconds in args.seconds or [1.5, 3.0, 10.0]]
    print(
        f"database: {connection.vendor}; DB interval {settings.TRACKER_DB_INTERVAL}s, "
        f"broadcast interval {settings.TRACKER_BROADCAST_INTERVAL}s"
    )
    header = (
        "run s",
        "progress msgs",
        "progress_state",
        "all msgs",
        "DB write stmts",
        "broadcasts",
        "writes/s",
        "broadcasts/s",
        "timeline events",
        "status",
    )
    print(" | ".join(header))
    for row in rows:
        print(
            " | ".join(
                str(v)
                for v in (
                    f"{row['elapsed']:.1f}",
                    row["progress"],
                    row["progress_state"],
                    row["all_messages"],
                    row["write_statements"],
                    row["broadcasts"],
                    f"{row['write_statements'] / row['elapsed']:.1f}",
                    f"{row['broadcasts'] / row['elapsed']:.1f}",
                    row["events"],
                    row["status"],
                )
            )
        )
    for row in rows:
        print(f"\n{row['elapsed']:.1f}s job, write statements by table: {row['by_table']}")


if __name__ == "__main__":
    main()
