"""Django's Redis cache with one connection pool per process and server, not one per request.

Django keeps a cache backend instance per async context (`django.core.cache.caches` is
context-local), and each instance makes a redis-py ConnectionPool of its own: under ASGI every
request and every websocket handshake opened a new Redis connection (a TCP connect, redis-py's
connect handshake, and redis-py reading its own version from the installed packages' metadata) and
left it to the garbage collector (django/django pull request 18459, open). A storm of 2,000 websocket
connects spent more of its time there than in its database queries (py-spy, devtools/benchmarks/
fanout.py). Here every instance in a process shares the process's pools; redis-py's pools are
thread-safe and start afresh in a forked child.

Django also builds a new redis-py client for every cache call, and a client builds its table of
response callbacks (about 80 entries) each time: six cache calls of a POST /api/jobs/ (throttles,
quotas) spent 3.5 ms there (cProfile, 30 POSTs). A client only holds its pool, so one per pool is
shared the same way.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache, RedisCacheClient

_pools: dict[tuple[int, str, str], Any] = {}
_clients: dict[int, Any] = {}  # id(pool) -> its client; pools live as long as the process
_lock = threading.Lock()


class SharedPoolRedisCacheClient(RedisCacheClient):
    def _get_connection_pool(self, write: bool) -> Any:
        client: Any = self  # Django's private attributes, which its type stubs leave out
        server = client._servers[client._get_connection_pool_index(write)]
        options = client._pool_options
        key = (os.getpid(), server, repr(sorted(options.items(), key=lambda item: item[0])))
        pool = _pools.get(key)
        if pool is None:
            with _lock:
                pool = _pools.get(key)
                if pool is None:
                    pool = _pools[key] = client._pool_class.from_url(server, **options)
        return pool

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        pool = self._get_connection_pool(write)
        shared = _clients.get(id(pool))
        if shared is None:
            client: Any = self
            shared = _clients.setdefault(id(pool), client._client(connection_pool=pool))
        return shared


class SharedPoolRedisCache(RedisCache):
    """settings.CACHES' BACKEND: `access.redis_cache.SharedPoolRedisCache`."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = SharedPoolRedisCacheClient

    def incr_expiring(self, key: str, timeout: int) -> int:
        """Count one in a counter that expires `timeout` seconds after its first count, in one round
        trip (cache.add then cache.incr take three: SET NX, EXISTS, INCRBY)."""
        key = self.make_and_validate_key(key)
        client: Any = self._cache  # Django's client, which the type stubs leave out
        pipe = client.get_client(key, write=True).pipeline(transaction=False)
        pipe.set(key, 0, ex=timeout, nx=True)
        pipe.incr(key)
        return int(pipe.execute()[1])


def cache_incr_expiring(key: str, timeout: int) -> int:
    """The count after counting one in `key`, which expires `timeout` seconds after its first count;
    one round trip on the Redis cache, what Django's API allows on the others."""
    counter = getattr(cache, "incr_expiring", None)
    if counter is not None:
        return int(counter(key, timeout))
    cache.add(key, 0, timeout=timeout)
    try:
        return int(cache.incr(key))
    except ValueError:  # the key expired between the two calls: this is its first count
        cache.set(key, 1, timeout=timeout)
        return 1


def cache_redis_client() -> Any | None:
    """A client of the cache's Redis (the process's shared one), or None when the cache is not Redis
    (the unit tests' in-memory cache): for what Django's cache API cannot say (scripts, blocking reads)."""
    default = caches["default"]
    if not isinstance(default, RedisCache):
        return None
    client: Any = default._cache  # Django's client, which the type stubs leave out
    return client.get_client(write=True)
