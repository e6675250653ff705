"""Start a Celery worker as the deployment runs it: `manage.py run_worker gpu <backend>`, `run_worker default`
or `run_worker webhooks`."""

from __future__ import annotations

import os
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from fleet.workers import default_worker_args, gpu_worker_args, webhook_worker_args


class Command(BaseCommand):
    help = "Replace this process with the Celery worker of one GPU backend, the default worker or the webhooks worker."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kind", choices=["gpu", "default", "webhooks"])
        parser.add_argument("backend", nargs="?", help="the backend's name (for a GPU worker)")
        parser.add_argument("--loglevel", default="INFO")

    def handle(self, *args: Any, kind: str, backend: str | None, loglevel: str, **options: Any) -> None:
        if kind == "gpu":
            if backend not in settings.COMFYUI_BACKENDS:
                configured = ", ".join(sorted(settings.COMFYUI_BACKENDS))
                raise CommandError(f"unknown backend {backend!r}; configured: {configured}")
            worker = gpu_worker_args(backend)
        elif kind == "webhooks":
            worker = webhook_worker_args(settings.WEBHOOK_WORKER_CONCURRENCY)
        else:
            worker = default_worker_args()
        argv = [sys.executable, "-m", "celery", "-A", "anime_production", *worker, "--loglevel", loglevel]
        sys.stdout.flush()
        os.execv(sys.executable, argv)
