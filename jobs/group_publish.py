"""Channel-layer group sends from sync code, published from the calling thread (the pub/sub layer).

channels_redis's pub/sub layer sends a group message as one Redis PUBLISH to the group's channel,
`{prefix}__group__{group}`, on the shard that hashes the name, of the message serialized by the
layer (msgpack, encrypted when keys are set). Through the layer itself a sync caller hands the sends
to an event loop in another thread and waits: 0.81 ms of CPU for a job's three groups (its own,
staff's, its owner's), one asyncio round trip to Redis after another, against 0.1 ms here (one
serialization, one pipelined round trip per shard, redis-py's sync client). A tracker broadcasts
8 times a second: that was a third of its CPU (devtools/benchmarks/tracker_cpu.py).

What is sent is what the layer's own group_send would send, byte for byte: the layer serializes it,
and the channel names and shards are the layer's (channels_redis 4.x; the pinned version is checked
by tests/integration/test_group_publish.py, which receives through the layer what was published
here). Any other layer, or a pub/sub layer on Sentinel hosts, has no publisher here: its sends go
through the layer (jobs.broadcast).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import redis
from channels.layers import get_channel_layer
from channels_redis.utils import _consistent_hash, decode_hosts

# A Redis that does not answer fails the send after this long (the database stays the truth).
PUBLISH_TIMEOUT = 5.0

PUBSUB_LAYER = "channels_redis.pubsub.RedisPubSubChannelLayer"


class GroupPublisher:
    """Publishes group messages for one pub/sub layer, from any thread (redis-py's pools are
    thread-safe and start afresh in a forked child)."""

    def __init__(self, layer: Any, hosts: list[dict[str, Any]], prefix: str) -> None:
        self._layer = layer
        self._prefix = prefix
        self._clients = [redis.Redis(connection_pool=_pool(host)) for host in hosts]

    def channel(self, group: str) -> str:
        return f"{self._prefix}__group__{group}"

    def publish(self, groups: list[str], message: dict[str, Any]) -> None:
        """One message to every group: serialized once, one round trip per shard. Raises redis-py's
        errors."""
        payload = self._layer.serialize(message)
        by_shard: dict[int, list[str]] = {}
        for group in groups:
            channel = self.channel(group)
            by_shard.setdefault(_consistent_hash(channel, len(self._clients)), []).append(channel)
        for shard, channels in by_shard.items():
            pipe = self._clients[shard].pipeline(transaction=False)
            for channel in channels:
                pipe.publish(channel, payload)
            pipe.execute()


def _pool(host: dict[str, Any]) -> redis.ConnectionPool:
    """A sync pool for a host entry as channels_redis.utils.create_pool reads it, with a timeout."""
    options = {**host, "socket_timeout": PUBLISH_TIMEOUT, "socket_connect_timeout": PUBLISH_TIMEOUT}
    address = options.pop("address", None)
    if address is not None:
        return redis.ConnectionPool.from_url(address, **options)
    return redis.ConnectionPool(**options)


# (pid, the layer, its publisher): the layer is held, so a layer made after it (settings changed) is
# never taken for it.
_current: tuple[int, Any, GroupPublisher | None] | None = None
_lock = threading.Lock()


def group_publisher() -> GroupPublisher | None:
    """The publisher of the default channel layer, or None when its sends must go through it."""
    global _current
    layer = get_channel_layer()
    current = _current
    if current is None or current[0] != os.getpid() or current[1] is not layer:
        with _lock:
            current = _current
            if current is None or current[0] != os.getpid() or current[1] is not layer:
                current = _current = (os.getpid(), layer, _publisher_for(layer))
    return current[2]


def _publisher_for(layer: Any) -> GroupPublisher | None:
    if layer is None or f"{type(layer).__module__}.{type(layer).__qualname__}" != PUBSUB_LAYER:
        return None
    # The arguments the layer was made with (it makes its per-loop layers from them).
    options: dict[str, Any] = dict(getattr(layer, "_kwargs", None) or {})
    if getattr(layer, "_args", ()):
        return None
    hosts = decode_hosts(options.get("hosts"))
    if any("sentinels" in host or "master_name" in host for host in hosts):
        return None
    return GroupPublisher(layer, hosts, options.get("prefix", "asgi"))
