"""What a shot pipeline costs the database: queries to make one (POST /api/pipelines/), to show one
(GET /api/pipelines/<id>/), to release a downstream job when its upstream completes, to fail a
chain of blocked jobs down the pipeline, and one sweep of blocked jobs; with the wall time of each
(noisy on a shared machine: the counts are the figures to compare).

    createdb -h 127.0.0.1 -U postgres anime_bench_pipelines
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/anime_bench_pipelines \\
        .venv/bin/python -m devtools.benchmarks.pipeline_counts --jobs 2 --jobs 10 --jobs 100

Each pipeline is a chain: job k reads job k-1's first output. Nothing runs on a GPU: the upstream's
completion is written through the state machine (jobs.services) with one stored output, as the
tracker would.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "anime_production.settings")
os.environ.setdefault("CELERY_KEY_PREFIX", f"bench-{os.getpid()}-")
os.environ.setdefault("CHANNEL_LAYER_PREFIX", f"bench-{os.getpid()}-asgi")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.files.base import ContentFile  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from jobs import services  # noqa: E402
from jobs.models import Job, JobOutput, JobStatus  # noqa: E402
from jobs.sweeps import sweep_blocked_jobs  # noqa: E402


def chain(length: int) -> dict[str, Any]:
    first = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "k0"}},
    }
    jobs = [{"key": "k0", "workflow": first}]
    for k in range(1, length):
        workflow = {
            "1": {"class_type": "LoadImage", "inputs": {"image": f"output:k{k - 1}/0"}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": f"k{k}"}},
        }
        jobs.append({"key": f"k{k}", "workflow": workflow})
    return {"name": f"bench chain {length}", "job_type": "image", "jobs": jobs}


def measured(action: Callable[[], Any]) -> tuple[Any, int, float]:
    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        result = action()
        elapsed = time.perf_counter() - started
    return result, len(queries), elapsed * 1000


def completed(job: Job) -> None:
    services.job_transition(job, JobStatus.SUBMITTED)
    output = JobOutput(job=job, node_id="2", kind="images", comfy_filename="k.png", media_type="image/png")
    output.file.save("k.png", ContentFile(b"png"), save=True)
    services.job_close(job, JobStatus.COMPLETED)


def run(length: int, api: APIClient) -> dict[str, Any]:
    response, create_queries, create_ms = measured(lambda: api.post("/api/pipelines/", chain(length), format="json"))
    assert response.status_code == 201, response.content
    pipeline = response.json()
    _, show_queries, show_ms = measured(lambda: api.get(f"/api/pipelines/{pipeline['id']}/"))
    jobs = {job.pipeline_key: job for job in Job.objects.filter(group_id=pipeline["id"])}
    _, release_queries, release_ms = measured(lambda: completed(jobs["k0"]))
    assert Job.objects.get(pk=jobs["k1"].pk).status == JobStatus.QUEUED if length > 1 else True
    # The released job fails: every job after it fails dependency_failed, in the same transaction.
    second = Job.objects.get(pk=jobs["k1"].pk) if length > 1 else None
    fail_queries, fail_ms = 0, 0.0
    if second is not None:
        _, fail_queries, fail_ms = measured(lambda: services.job_cancel(second))
        failed = Job.objects.filter(group_id=pipeline["id"], failure_category="dependency_failed").count()
        assert failed == length - 2, failed
    _, sweep_queries, sweep_ms = measured(sweep_blocked_jobs)
    return {
        "create": (create_queries, create_ms),
        "show": (show_queries, show_ms),
        "release one": (release_queries, release_ms),
        "fail the chain": (fail_queries, fail_ms),
        "sweep (nothing to do)": (sweep_queries, sweep_ms),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, action="append", help="pipeline length (repeatable)")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    settings.MEDIA_ROOT = f"/tmp/bench-pipelines-{os.getpid()}"
    user, _ = get_user_model().objects.get_or_create(username="bench-pipelines")
    api = APIClient()
    api.force_authenticate(user)
    settings.PIPELINE_MAX_JOBS = max(args.jobs or [10])
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_CLASSES": []}
    print(f"database: {connection.vendor}; queries (wall ms, noisy)")
    for length in args.jobs or [2, 10, 100]:
        cells = ", ".join(f"{name} {q} ({ms:.0f} ms)" for name, (q, ms) in run(length, api).items())
        print(f"chain of {length:>3} jobs: {cells}")


if __name__ == "__main__":
    main()
