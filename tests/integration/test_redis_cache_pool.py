"""The cache on Redis opens one connection pool per process, not one per request (access/redis_cache.py):
Django keeps a cache instance per async context, and its own Redis backend gave each a new pool, so
under ASGI every request and websocket handshake opened a Redis connection of its own."""

from __future__ import annotations

import contextvars
from typing import Any

import redis
from django.conf import settings
from django.core.cache import caches

from access.redis_cache import cache_incr_expiring


def cache_in_a_new_context() -> Any:
    """The default cache as code in a new async context (a request, a handshake) gets it."""
    return contextvars.Context().run(lambda: caches["default"])


def clients() -> int:
    listed: Any = redis.Redis.from_url(str(settings.CACHES["default"]["LOCATION"])).client_list()
    return len(listed)


def test_a_hundred_requests_share_the_process_s_redis_connections():
    first = cache_in_a_new_context()
    first.set("shared-pool-probe", 1, timeout=30)
    before = clients()
    instances = [cache_in_a_new_context() for _ in range(100)]
    assert len({id(instance) for instance in instances}) > 1, "Django gives each context a cache of its own"
    for instance in instances:
        assert instance.get("shared-pool-probe") == 1
    assert clients() - before <= 2, "no connection per request"


def test_a_counter_counts_in_one_round_trip_and_expires_from_its_first_count():
    cache = caches["default"]
    cache.delete("counter-probe")
    assert [cache_incr_expiring("counter-probe", 30) for _ in range(3)] == [1, 2, 3]
    assert cache.get("counter-probe") == 3, "Django's API reads the same counter"
    raw: Any = redis.Redis.from_url(str(settings.CACHES["default"]["LOCATION"]))
    ttl = raw.ttl(cache.make_and_validate_key("counter-probe"))
    assert 0 < ttl <= 30, "the later counts do not push the expiry back"
    cache.delete("counter-probe")


def test_every_cache_call_in_a_process_uses_one_client_per_pool():
    # Django builds a redis-py client per call; each builds its table of response callbacks.
    one, other = cache_in_a_new_context(), cache_in_a_new_context()
    assert one._cache.get_client("a") is other._cache.get_client("b", write=True)
    one.set("shared-client-probe", 2, timeout=30)
    assert other.get("shared-client-probe") == 2
