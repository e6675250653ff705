"""What one Prometheus scrape costs the database at a studio's scale: the database part of /metrics
(metrics.collector.database_metrics, read once per METRICS_CACHE_SECONDS per process) and the whole
text a scrape gets, wall time (median, p95 over --runs, cache emptied before each) and queries, with
few and many jobs waiting.

    createdb -h 127.0.0.1 -U postgres metrics_scale
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/metrics_scale .venv/bin/python manage.py migrate
    DATABASE_URL=... .venv/bin/python manage.py generate_history --jobs 1000000
    DATABASE_URL=... .venv/bin/python -m devtools.benchmarks.metrics_scrape --waiting 10 --waiting 10000

`--waiting` queued jobs (half bound to no backend, as late routing leaves them), 5 running ones, and
`--finished-since` jobs finished after the roll-ups' last refresh (what a scrape counts from the job table)
are added beside the history and deleted at the end. Figures are noisy on a shared machine: the load
average is printed with them.
"""

from __future__ import annotations

import argparse
import os
from datetime import timedelta

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "anime_production.settings")

import django

django.setup()

from django.utils import timezone  # noqa: E402

from devtools.benchmarks.timed_queries import timed  # noqa: E402
from jobs.models import Job, JobStatus  # noqa: E402
from metrics.collector import DATABASE_COLLECTOR, database_metrics  # noqa: E402
from metrics.exposition import metrics_text  # noqa: E402

MARK = "metrics-bench"


def jobs_add(waiting: int, finished_since: int) -> None:
    now = timezone.now()
    rows = [
        Job(backend="" if n % 2 else "default", job_type="image", workflow={}, name=MARK, status=JobStatus.QUEUED)
        for n in range(waiting)
    ]
    rows += [
        Job(backend="default", job_type="video", workflow={}, name=MARK, status=JobStatus.RUNNING, started_at=now)
        for _ in range(5)
    ]
    rows += [
        Job(
            backend="default",
            job_type="image",
            workflow={},
            name=MARK,
            status=JobStatus.FAILED if n % 10 == 0 else JobStatus.COMPLETED,
            failure_category="node_error" if n % 10 == 0 else "",
            started_at=now - timedelta(seconds=40),
            finished_at=now,
        )
        for n in range(finished_since)
    ]
    Job.objects.bulk_create(rows, batch_size=5000)


def jobs_remove() -> None:
    Job.objects.filter(name=MARK).delete()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waiting", type=int, action="append", help="queued jobs beside the history (repeatable)")
    parser.add_argument("--finished-since", type=int, default=100, help="jobs finished after the last roll-up")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    total = Job.objects.count()
    print(f"history: {total:,} jobs; load average {os.getloadavg()[0]:.1f}; {args.runs} runs, cache emptied each")
    print(f"{'waiting':>8} {'what':<24} {'median ms':>10} {'p95 ms':>8} {'queries':>8}")
    for waiting in args.waiting or [10, 10_000]:
        jobs_remove()
        jobs_add(waiting, args.finished_since)
        try:
            for name, action in (("database_metrics", database_metrics), ("whole scrape text", metrics_text)):
                median, p95, queries = timed(action, args.runs, before=DATABASE_COLLECTOR.clear)
                print(f"{waiting:>8,} {name:<24} {median:>10.1f} {p95:>8.1f} {queries:>8}")
        finally:
            jobs_remove()
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
