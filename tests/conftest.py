"""What every tier shares: the test database's settings, users and API clients, the recorded traces.

Three tiers, one folder each (STYLE.md, "Tests"):

- tests/unit: in this process only: no Redis, no database server of its own (SQLite unless
  DATABASE_URL says otherwise), no subprocesses; the ComfyUI simulator, where a test needs one,
  serves from a thread of this process (tests/unit/conftest.py). `make test-unit`, seconds.
- tests/integration: real Redis, the real database, Celery worker processes, daphne, the simulator
  as a process (fixtures in tests/system.py). `make test-integration`.
- tests/browser: the admin in Debian's chromium under Playwright. `make test-browser`.

`make test` runs all three. A run of several tiers at once runs the unit tier first.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from rest_framework.test import APIClient

from tests.factories import UserFactory, api_key_for

pytest_plugins = ["tests.system"]

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "integration", "browser")
TRACES_DIR = TESTS / "data" / "comfyui-traces"

T = TypeVar("T")


def pytest_configure(config: pytest.Config) -> None:
    for tier in TIERS:
        config.addinivalue_line("markers", f"{tier}: the test lives in tests/{tier} (added from its folder)")
    strays = sorted(path.name for path in TESTS.glob("test_*.py"))
    if strays:
        raise pytest.UsageError(
            f"tests/{', tests/'.join(strays)}: in no tier, so `make test` would never run it. "
            "Move it to tests/unit (in-process), tests/integration (real processes) or tests/browser."
        )


def tier_of(item: pytest.Item) -> str:
    path = Path(str(item.path)).resolve()
    return path.relative_to(TESTS).parts[0] if path.is_relative_to(TESTS) else ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its tier, and run the fast tier first when several are collected."""
    for item in items:
        tier = tier_of(item)
        if tier in TIERS:
            item.add_marker(tier)
    items.sort(key=lambda item: TIERS.index(tier_of(item)) if tier_of(item) in TIERS else len(TIERS))


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """A test database that a fresh clone can create, and that concurrent runs do not share.

    SQLite: the settings put the test database under var/, which a fresh clone does not have yet.
    PostgreSQL: Django names the test database `test_<name>` whoever runs; a second run at the same
    time would drop the first one's. Each run gets its own name (a database left behind by a killed
    run is `test_<name>_<pid>`: drop it with `dropdb`)."""
    from django.conf import settings

    for db in settings.DATABASES.values():
        test = db.setdefault("TEST", {})
        if db["ENGINE"].endswith("sqlite3"):
            name = test.get("NAME")
            if name and not str(name).startswith(("file:", ":memory:")):
                Path(name).parent.mkdir(parents=True, exist_ok=True)
        else:
            test["NAME"] = f"{test.get('NAME') or 'test_' + db['NAME']}_{os.getpid()}"


def load_trace(name: str) -> list[dict[str, Any]]:
    with open(TRACES_DIR / name) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.1, message: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


@pytest.fixture
def user(db):
    return UserFactory.create()


@pytest.fixture
def api(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_for(user)}")
    return client


@pytest.fixture
def throttle_rates(monkeypatch: pytest.MonkeyPatch) -> Callable[..., dict[str, str]]:
    """Sets the REST rates for one test, e.g. throttle_rates(anon="100/min", user="1/min", submit="1/min"),
    and returns them (changing the dict changes them). DRF reads the rates once, into the throttle
    class, when it is imported: settings changed later are not seen."""
    from rest_framework.throttling import SimpleRateThrottle

    def set_rates(**rates: str) -> dict[str, str]:
        monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)
        return rates

    return set_rates


@pytest.fixture(autouse=True)
def _gpu_workers_do_not_linger(settings: Any) -> None:
    """A GPU worker's task waits a while for the next wake after its last job
    (jobs.tracking.backend_work); in-process, a test's call would wait it out. Its own tests set it."""
    settings.GPU_WORKER_LINGER_SECONDS = 0


@pytest.fixture(autouse=True)
def _backend_facts_read_fresh() -> None:
    """Routing keeps what it read of the backends for a second (fleet.catalog.backend_facts); a test
    starts from its own rows."""
    from fleet.catalog import backend_facts_forget

    backend_facts_forget()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None) -> Iterator[None]:
    """pytest-django's, and before it drops the test database: the connections that the ASGI
    application's request and handshake threads keep are closed (access.kept_connections); left
    open, PostgreSQL refused to drop the database ("being accessed by other users")."""
    yield
    from access.kept_connections import kept_connections_close

    kept_connections_close()


@pytest.fixture(autouse=True)
def _refresher_stopped_after() -> Iterator[None]:
    """A test whose clock passed a cached history's minute has it read again on the process's
    refresher thread (jobs.refresh_ahead): stopped after the test, its connection to the test
    database closed, so no test inherits it and the test database can be dropped."""
    yield
    from jobs.refresh_ahead import refresher_stop

    refresher_stop()
