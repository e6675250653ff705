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


def test_the_web_process_has_its_views_and_redis_client_loaded_before_it_serves() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "anime_production.settings"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        check=False,
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "missing: []"
