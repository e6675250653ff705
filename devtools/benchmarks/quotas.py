"""What the quotas cost the database at a studio's scale: who may not start a job now (read by every
dispatch), the admission check (every submit), and the usage of every user (the admin page and
GET /api/quotas/): wall time (median, p95 over --runs) and queries, with few and many jobs waiting.

    createdb -h 127.0.0.1 -U postgres quotas_scale
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/quotas_scale .venv/bin/python manage.py migrate
    DATABASE_URL=... .venv/bin/python manage.py generate_history --jobs 1000000 --users 40 --skip-rollup
    DATABASE_URL=... .venv/bin/python -m devtools.benchmarks.quotas --waiting 10 --waiting 10000

The history's users get limits of their own (running 2, waiting 100,000, 10 GPU-hours a day) and the
defaults are set, so every read does its whole work; `--waiting` queued jobs and 2 running jobs per
user are added beside the history and deleted at the end. Figures are noisy on a shared machine: the
load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "anime_production.settings")

import django

django.setup()

from django.test.utils import override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402

from devtools.benchmarks.timed_queries import timed  # noqa: E402
from devtools.history import history_users  # noqa: E402
from jobs.models import Job, JobStatus  # noqa: E402
from quotas.admission import QuotaExceeded, submit_check  # noqa: E402
from quotas.limits import user_limits_forget, users_at_running_limit  # noqa: E402
from quotas.models import UserQuota  # noqa: E402
from quotas.overview import usage_overview  # noqa: E402

MARK = "quota-bench"
# Per operation: a dispatch reads users_at_running_limit inside its 50 ms p99 budget (issue 14).
GOAL_MS = {"users_at_running_limit": 10.0, "submit_check": 10.0, "usage_overview": 300.0}


def jobs_add(user_ids: list[int], waiting: int) -> None:
    now = timezone.now()
    rows = [
        Job(user_id=user_ids[n % len(user_ids)], backend="default", job_type="image", workflow={}, name=MARK)
        for n in range(waiting)
    ]
    rows += [
        Job(
            user_id=user_id,
            backend="default",
            job_type="image",
            workflow={},
            name=MARK,
            status=JobStatus.RUNNING,
            started_at=now,
        )
        for user_id in user_ids
        for _ in range(2)
    ]
    Job.objects.bulk_create(rows, batch_size=5000)


def check_quietly(user: Any) -> None:
    try:
        submit_check(user, 1)
    except QuotaExceeded:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiting", type=int, action="append", help="queued jobs beside the history")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    user_ids = history_users(40)
    from django.contrib.auth import get_user_model

    users = list(get_user_model().objects.filter(pk__in=user_ids))
    print(f"history: {Job.objects.count():,} jobs, {len(users)} users; load average {os.getloadavg()[0]:.2f}")
    UserQuota.objects.filter(user_id__in=user_ids).delete()
    UserQuota.objects.bulk_create(
        [
            UserQuota(user_id=pk, max_running_jobs=2, max_waiting_jobs=100_000, gpu_seconds_per_day=36_000)
            for pk in user_ids
        ]
    )
    defaults = {"QUOTA_MAX_RUNNING_JOBS": 4, "QUOTA_MAX_WAITING_JOBS": 100_000, "QUOTA_GPU_SECONDS_PER_DAY": 36_000}
    try:
        with override_settings(QUOTA_OVER_LIMIT="reject", **defaults):
            for waiting in args.waiting or [10, 10_000]:
                Job.objects.filter(name=MARK).delete()
                jobs_add(user_ids, waiting)
                print(f"\n{waiting:,} jobs waiting, {2 * len(user_ids)} running")
                print(f"{'operation':<24} {'median ms':>10} {'p95 ms':>10} {'queries':>8} {'goal ms':>8}")
                operations: dict[str, Callable[[], Any]] = {
                    "users_at_running_limit": users_at_running_limit,
                    "submit_check": lambda: check_quietly(users[0]),
                    "usage_overview": lambda: usage_overview(now=timezone.now()),
                }
                for name, action in operations.items():
                    median, p95, queries = timed(action, args.runs)
                    print(f"{name:<24} {median:>10.2f} {p95:>10.2f} {queries:>8} {GOAL_MS[name]:>8.0f}")
                # The same dispatch read where no daily GPU limit is set: only the jobs on a GPU.
                UserQuota.objects.filter(user_id__in=user_ids).update(gpu_seconds_per_day=None)
                with override_settings(QUOTA_GPU_SECONDS_PER_DAY=None):
                    user_limits_forget()
                    median, p95, queries = timed(users_at_running_limit, args.runs)
                print(f"{'  ... no daily GPU limit':<24} {median:>10.2f} {p95:>10.2f} {queries:>8} {10:>8.0f}")
                UserQuota.objects.filter(user_id__in=user_ids).update(gpu_seconds_per_day=36_000)
                user_limits_forget()
    finally:
        Job.objects.filter(name=MARK).delete()
        UserQuota.objects.filter(user_id__in=user_ids).delete()


if __name__ == "__main__":
    main()
