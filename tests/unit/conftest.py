"""The unit tier runs in this process only: no Redis, no subprocesses, no servers of its own.

- The channel layer is Channels' in-memory one: broadcasts reach the consumers of this process.
- The cache (rate limits) is a local-memory one, emptied before each test.
- Celery sends to kombu's in-memory transport: an enqueued task stays in this process, unrun.
- Redis itself is out of reach: a connection attempt fails the test that made it.
- Passwords are hashed with a fast hasher (PBKDF2's million rounds cost ~0.3 s per user).
- `comfyui_sim` is the ComfyUI simulator's application on a thread of this process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from comfy_api.fleet_info import fleet_info_forget
from devtools.simulator_process import InProcessSimulator
from jobs.tracking import session
from tests.hostile_comfyui import HostileComfyUI


def _refuse_redis(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("a unit test tried to connect to Redis: it belongs in tests/integration")


@pytest.fixture(scope="package", autouse=True)
def _no_redis() -> Iterator[None]:
    import redis.asyncio.connection
    import redis.connection

    patch = pytest.MonkeyPatch()
    patch.setattr(redis.connection.AbstractConnection, "connect", _refuse_redis)
    patch.setattr(redis.asyncio.connection.AbstractConnection, "connect", _refuse_redis)
    yield
    patch.undo()


@pytest.fixture(scope="package", autouse=True)
def _celery_in_memory() -> Iterator[None]:
    from anime_production.celery import app

    saved = app.conf.broker_url
    app.conf.broker_url = "memory://"
    _drop_broker_pools(app)
    yield
    app.conf.broker_url = saved
    _drop_broker_pools(app)


def _drop_broker_pools(app: Any) -> None:
    # Celery keeps its connection and producer pools for the broker it first connected to; the
    # next send must open them again for the broker configured now (what Celery does after a fork).
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture(scope="package", autouse=True)
def _in_process_settings() -> Iterator[None]:
    from django.test import override_settings

    with override_settings(
        CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "unit"}},
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
    ):
        yield


@pytest.fixture(autouse=True)
def _empty_cache() -> None:
    from django.core.cache import cache

    cache.clear()  # the test client is one address: rate limits must not carry over between tests


@pytest.fixture
def comfyui_sim(tmp_path: Path) -> Iterator[InProcessSimulator]:
    """A fresh simulator for one test (own port, own output dir, empty queue and history)."""
    sim = InProcessSimulator(output_dir=tmp_path / "comfyui" / "output")
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def hostile_comfyui(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HostileComfyUI]:
    """A fake ComfyUI, on a thread, as the default backend: each test sets the hostile answers.

    Its websocket never reports the prompt (the answer is in its /history), so the tracker learns
    the end when it reconciles after a silence: half a second here, not a real ComfyUI's 10 s."""
    fake = HostileComfyUI().start()
    settings.COMFYUI_BACKENDS = {"default": fake.url}
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.TRACKER_RECONNECT_SECONDS = 2
    monkeypatch.setattr(session, "IDLE_RECONCILE_SECONDS", 0.5)
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def front_door_fleet(settings: Any, tmp_path: Path, comfyui_sim: InProcessSimulator) -> None:
    """The front door's tests: one backend (an in-process simulator), storage in tmp_path, and the
    fleet's object_info read afresh (comfy_api.fleet_info caches it)."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.COMFYUI_BACKENDS = {"default": comfyui_sim.url}
    fleet_info_forget()
