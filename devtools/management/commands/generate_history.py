import time

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from devtools.history import HistoryGenerator, history_analyze, history_users, history_write
from monitoring.rollups import stats_rollup_refresh


class Command(BaseCommand):
    help = "Generate realistic finished-job history (jobs, attempts, node timings) and rebuild the roll-ups."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--jobs", type=int, default=100_000)
        parser.add_argument("--days", type=int, default=90)
        parser.add_argument("--users", type=int, default=40)
        parser.add_argument("--batch", type=int, default=20_000, help="jobs per transaction")
        parser.add_argument(
            "--seed", type=int, default=None, help="repeatable data (ids too: use it once per database)"
        )
        parser.add_argument("--skip-rollup", action="store_true", help="leave the roll-ups to the beat task")

    def handle(
        self, *args, jobs: int, days: int, users: int, batch: int, seed: int | None, skip_rollup: bool, **options
    ) -> None:
        began = time.monotonic()
        generator = HistoryGenerator(now=timezone.now(), days=days, user_ids=history_users(users), seed=seed)
        written = attempts = timings = 0
        for chunk in generator.batches(jobs, batch):
            history_write(chunk)
            written += len(chunk.jobs)
            attempts += len(chunk.attempts)
            timings += len(chunk.timings)
            self.stdout.write(
                f"{written:>10,} jobs  {attempts:>10,} attempts  {timings:>10,} node timings  "
                f"{time.monotonic() - began:7.1f} s"
            )
        history_analyze()
        if not skip_rollup:
            result = stats_rollup_refresh(rebuild=True)
            self.stdout.write(
                f"roll-ups rebuilt: {result.job_rows:,} job rows, {result.node_rows:,} node rows, "
                f"{result.message_rows:,} message rows"
            )
        self.stdout.write(self.style.SUCCESS(f"done in {time.monotonic() - began:.1f} s"))
