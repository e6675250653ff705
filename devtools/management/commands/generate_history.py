import time

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from devtools.history import BatchSizes, HistoryGenerator, history_analyze, history_load, history_users
from monitoring.models import ErrorMessageRollup, JobRollup, NodeRollup
from monitoring.rollups import stats_rollup_refresh


class Command(BaseCommand):
    help = "Generate realistic finished-job history (jobs, attempts, node timings) and rebuild the roll-ups."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--jobs", type=int, default=100_000)
        parser.add_argument("--days", type=int, default=90)
        parser.add_argument("--users", type=int, default=40)
        parser.add_argument("--batch", type=int, default=20_000, help="jobs per COPY (all in one transaction)")
        parser.add_argument(
            "--seed", type=int, default=None, help="repeatable data (ids too: use it once per database)"
        )
        parser.add_argument("--skip-rollup", action="store_true", help="leave the roll-ups to the beat task")

    def handle(
        self, *args, jobs: int, days: int, users: int, batch: int, seed: int | None, skip_rollup: bool, **options
    ) -> None:
        began = time.monotonic()
        generator = HistoryGenerator(now=timezone.now(), days=days, user_ids=history_users(users), seed=seed)
        totals = {"jobs": 0, "attempts": 0, "timings": 0}

        def written(sizes: BatchSizes) -> None:
            for name, size in zip(totals, sizes, strict=True):
                totals[name] += size
            self.stdout.write(
                f"{totals['jobs']:>10,} jobs  {totals['attempts']:>10,} attempts  {totals['timings']:>10,} node timings"
                f"  {time.monotonic() - began:7.1f} s"
            )

        history_load(generator.batches(jobs, batch), written)
        self.stdout.write(f"indexes and foreign keys made again, committed: {time.monotonic() - began:7.1f} s")
        history_analyze()
        self.stdout.write(f"vacuumed and analysed: {time.monotonic() - began:7.1f} s")
        if not skip_rollup:
            result = stats_rollup_refresh(rebuild=True)
            history_analyze((JobRollup, NodeRollup, ErrorMessageRollup))
            self.stdout.write(
                f"roll-ups rebuilt: {result.job_rows:,} job rows, {result.node_rows:,} node rows, "
                f"{result.message_rows:,} message rows  {time.monotonic() - began:7.1f} s"
            )
        self.stdout.write(self.style.SUCCESS(f"done in {time.monotonic() - began:.1f} s"))
