"""`python manage.py eta_accuracy`: the learned ETA against the naive one on simulated runs."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from devtools.eta_accuracy import eta_accuracy, format_report


class Command(BaseCommand):
    help = "Median relative error of the learned ETA and of elapsed/fraction on simulated runs (deterministic)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument("--train", type=int, default=400, help="simulated runs to learn from")
        parser.add_argument("--test", type=int, default=300, help="held-out simulated runs to replay")

    def handle(self, *args: Any, seed: int, train: int, test: int, **options: Any) -> None:
        self.stdout.write(format_report(eta_accuracy(seed=seed, train=train, test=test)))
