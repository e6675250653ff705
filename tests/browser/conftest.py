"""The browser tier: the admin in Debian's chromium (Playwright), against the real system's parts
(daphne, a GPU worker, the simulator: tests/system.py) on the real Redis and database."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _redis_of_this_run(redis_of_this_run: None) -> None:
    """The pages under test reach Redis through daphne and the worker."""
