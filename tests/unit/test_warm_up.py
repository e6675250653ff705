"""A web process pays its one-time costs when it starts, not on some user's first request."""

from __future__ import annotations

import os
import subprocess
import sys

from django.conf import settings

PROBE = """
import sys
import anime_production.asgi
loaded = [m for m in ("jobs.api", "comfy_api.views_prompts", "redis") if m not in sys.modules]
print("missing:", loaded)
"""


def last_line_printed(code: str) -> str:
    """What `code` printed last, run in a new Python process (nothing of this test process loaded)."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "anime_production.settings"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_the_web_process_has_its_views_and_redis_client_loaded_before_it_serves() -> None:
    assert last_line_printed(PROBE) == "missing: []"


WORKER_PROBE = """
import gc
import sys
import django
django.setup()
from celery import signals
import anime_production.celery
before = [m for m in ("jobs.api", "comfy_api.views_prompts") if m in sys.modules]
signals.worker_init.send(sender=None)
missing = [m for m in ("jobs.api", "comfy_api.views_prompts", "redis") if m not in sys.modules]
from jobs.api import JobViewSet
# Frozen objects are in no generation the collector walks (gc.get_objects lists those).
print("before:", before, "missing:", missing, "frozen:", not any(o is JobViewSet for o in gc.get_objects()))
"""


def test_a_worker_has_the_views_loaded_before_its_pool_forks() -> None:
    """A GPU worker's first job names itself in its first progress webhook (a URL reversed): the views
    are imported when the worker starts (Celery's worker_init, in the main process), not then, and
    frozen with the rest of what it loaded (full collections do not walk them)."""
    assert last_line_printed(WORKER_PROBE) == "before: [] missing: [] frozen: True"
