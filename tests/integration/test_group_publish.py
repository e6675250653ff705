"""Group sends published from the calling thread (jobs.group_publish) reach what subscribed through
channels_redis's own pub/sub layer: the same channel names, shards and serialization, on real Redis
servers. A channels_redis that changed any of them fails here."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from channels.layers import get_channel_layer
from django.conf import settings as django_settings

from jobs import broadcast
from jobs.group_publish import group_publisher
from tests.integration.fault_tools import PrivateRedis


@pytest.fixture
def second_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    redis = PrivateRedis(tmp_path / "redis.log")
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


def layer_with(settings: Any, **config: Any) -> None:
    layers: dict[str, Any] = copy.deepcopy(django_settings.CHANNEL_LAYERS)
    layers["default"]["CONFIG"].update(config)
    settings.CHANNEL_LAYERS = layers  # channels makes its layer again on setting_changed


def received(groups: list[str], message: dict[str, Any], *, listen_to: list[str]) -> dict[str, Any]:
    """What a subscriber of each group in `listen_to` received through the layer, once `message` was
    broadcast to `groups` from a sync thread."""

    async def scenario() -> dict[str, Any]:
        layer = get_channel_layer()
        channels = {}
        for group in listen_to:
            channels[group] = await layer.new_channel()
            await layer.group_add(group, channels[group])
        await asyncio.to_thread(broadcast.groups_broadcast, groups, message, what="a test message")
        got: dict[str, Any] = {}
        for group, channel in channels.items():
            try:
                got[group] = await asyncio.wait_for(layer.receive(channel), timeout=2)
            except TimeoutError:
                got[group] = None
        await layer.flush()
        return got

    return asyncio.run(scenario())


MESSAGE = {"type": "job.state", "id": "1c0f", "version": 7, "seqs": [3, 4], "state_json": '{"name": "shot 010 é"}'}


def test_every_group_s_subscribers_get_the_message_as_the_layer_sent_it():
    assert group_publisher() is not None  # the settings' layer: published from this thread
    got = received(["g-job", "g-staff", "g-user"], MESSAGE, listen_to=["g-job", "g-staff", "g-user", "g-other"])
    assert got == {"g-job": MESSAGE, "g-staff": MESSAGE, "g-user": MESSAGE, "g-other": None}


def test_groups_spread_over_two_redis_servers_reach_their_subscribers(settings, second_redis):
    config = cast(dict[str, Any], django_settings.CHANNEL_LAYERS["default"]["CONFIG"])
    hosts = [*config["hosts"], {"address": second_redis.url}]
    layer_with(settings, hosts=hosts)
    groups = [f"g-{n}" for n in range(12)]  # both shards get some (channels_redis hashes the names)
    got = received(groups, MESSAGE, listen_to=groups)
    assert got == dict.fromkeys(groups, MESSAGE)


def test_an_encrypting_layer_s_subscribers_read_the_message(settings):
    layer_with(settings, symmetric_encryption_keys=["a key for this test only"])
    assert received(["g-secret"], MESSAGE, listen_to=["g-secret"]) == {"g-secret": MESSAGE}


def test_a_redis_that_is_down_fails_the_broadcast_and_nothing_else(settings, second_redis, monkeypatch):
    layer_with(settings, hosts=[{"address": second_redis.url}])
    assert received(["g-up"], MESSAGE, listen_to=["g-up"]) == {"g-up": MESSAGE}
    second_redis.kill()
    warnings: list[str] = []
    monkeypatch.setattr(broadcast, "_last_failure_logged", 0.0)
    monkeypatch.setattr(broadcast.logger, "warning", lambda *args, **kwargs: warnings.append(args[0] % args[1:]))
    started = time.monotonic()
    broadcast.groups_broadcast(["g-down"], MESSAGE, what="job 1c0f")  # returns: never raises
    assert time.monotonic() - started < 5
    assert warnings == ["broadcast of job 1c0f failed (repeats are not logged for 30s)"]
    second_redis.start()
    assert received(["g-up"], MESSAGE, listen_to=["g-up"]) == {"g-up": MESSAGE}


def test_other_layers_and_sentinel_hosts_send_through_the_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    assert group_publisher() is None
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [{"master_name": "studio", "sentinels": [("127.0.0.1", 26379)]}]},
        }
    }
    assert group_publisher() is None
