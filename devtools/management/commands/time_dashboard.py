import statistics
import time
from datetime import timedelta
from urllib.parse import urlencode

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, reset_queries
from django.test import Client
from django.test.utils import override_settings
from django.utils import timezone

from jobs.models import Job

PAGES = (
    ("job list", "/admin/jobs/job/"),
    ("job list, filtered", "/admin/jobs/job/?status__exact=failed&backend=gpu4&failure_category__exact=out_of_memory"),
    ("job list, 2 filters + date", "/admin/jobs/job/?job_type=video&status__exact=completed&{week_ago}"),
    ("job list, search id prefix", "/admin/jobs/job/?q={prefix}"),
    ("job list, search username", "/admin/jobs/job/?q=artist03"),
    ("statistics (30 days)", "/admin/dashboard/statistics/"),
    ("statistics (90 days)", "/admin/dashboard/statistics/?days=90"),
    ("failures (30 days)", "/admin/dashboard/failures/"),
    ("failures (90 days)", "/admin/dashboard/failures/?days=90"),
    ("job page", "/admin/jobs/job/{job_id}/change/"),
    ("live queue", "/admin/dashboard/live-queue/"),
    ("backends", "/admin/dashboard/backends/"),
    ("GET /api/stats/", "/api/stats/"),
)


class Command(BaseCommand):
    help = "Time the dashboard's pages in-process (server time: middleware, queries, templates); median and max."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--runs", type=int, default=7)

    def handle(self, *args, runs: int, **options) -> None:
        job = Job.objects.order_by("-created_at").filter(status="failed").first()
        if job is None:
            raise CommandError("no jobs: run generate_history first")
        user, _ = get_user_model().objects.get_or_create(
            username="dashboard-timer", defaults={"is_staff": True, "is_superuser": True}
        )
        client = Client()
        client.force_login(user)
        midnight = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
        week_ago = urlencode({"created_at__gte": (midnight - timedelta(days=7)).isoformat()})
        values = {"job_id": job.pk, "prefix": str(job.pk)[:8], "week_ago": week_ago}
        self.stdout.write(
            f"{Job.objects.order_by().count():,} jobs in {connection.vendor}; {runs} runs per page "
            "(the first, warming caches, is included)\n"
        )
        self.stdout.write(f"{'page':<28} {'median ms':>10} {'max ms':>8} {'queries':>8}  url")
        for label, url_template in PAGES:
            url = url_template.format(**values)
            timings = []
            with override_settings(DEBUG=True):  # to count the queries
                for _ in range(runs):
                    reset_queries()
                    began = time.perf_counter()
                    response = client.get(url)
                    timings.append((time.perf_counter() - began) * 1000)
                    if response.status_code != 200:
                        raise CommandError(f"{url}: HTTP {response.status_code}")
                    queries = len(connection.queries)
            self.stdout.write(
                f"{label:<28} {statistics.median(timings):>10.1f} {max(timings):>8.1f} {queries:>8}  {url}"
            )
