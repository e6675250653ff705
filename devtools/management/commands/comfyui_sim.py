"""`python manage.py comfyui_sim --port 8188 [--host 127.0.0.1] [--output-dir DIR]`.

Starts the ComfyUI simulator (devtools.simulator) in the foreground; it imports nothing from Django.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from devtools.simulator.options import add_arguments, options_from_arguments
from devtools.simulator.server import run


class Command(BaseCommand):
    help = "Run the ComfyUI simulator: ComfyUI's HTTP and websocket protocol with fake, timed nodes."
    # The simulator touches no database or app state, so there is nothing for checks to guard.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: ArgumentParser) -> None:
        add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        run(options_from_arguments(options))
