"""`manage.py make_thumbnails`: thumbnails for image outputs stored before there were any.

Outputs are read in batches of `--batch` by id, oldest first, and each batch is one query: a run
stopped halfway is simply started again (an output that has its thumbnail is no longer asked for),
and `--after <id>` starts past outputs that cannot have one (the last line says where a run ended).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from jobs.models import JobOutput
from jobs.thumbnails import output_thumbnail_store

BATCH_MAX = 1000


class Command(BaseCommand):
    help = "Make the missing thumbnails of stored image outputs, in bounded batches (resumable)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch", type=int, default=100, help=f"outputs per query, 1 to {BATCH_MAX}")
        parser.add_argument("--after", type=int, default=0, help="start past this output id")
        parser.add_argument("--limit", type=int, default=0, help="stop after this many outputs (0: all)")

    def handle(self, *args: Any, batch: int, after: int, limit: int, **options: Any) -> None:
        batch = min(max(batch, 1), BATCH_MAX)
        made = without = 0
        last = after
        while not limit or made + without < limit:
            size = batch if not limit else min(batch, limit - made - without)
            outputs = list(
                JobOutput.objects.filter(pk__gt=last, thumbnail="", media_type__startswith="image/").order_by("pk")[
                    :size
                ]
            )
            if not outputs:
                break
            for output in outputs:
                if output_thumbnail_store(output):
                    made += 1
                else:
                    without += 1
            last = outputs[-1].pk
            self.stdout.write(f"{made} made, {without} without one (up to output {last})")
        self.stdout.write(f"done: {made} thumbnails made, {without} outputs without one; last output {last}")
