"""DRF's request rates (anon, user, scoped), each counted in one atomic Redis call.

DRF's throttles keep each client's request times as a list in the cache: read it, append, write it
back. Two requests of one user in flight at once read the same list and each writes back its own,
so one of them is not counted: 20 parallel clients got past a rate that way. And the list is the
whole window's (1,200 timestamps at the user rate), read and written whole by every request: two
cache round trips per throttle, four per request.

Here the same sliding window is a Redis sorted set, trimmed, counted and added to in one Lua call
(atomic in Redis, one round trip): the rates hold whatever the concurrency, and a refused request is
not counted, as with DRF. Retry-After is when the oldest request in the window leaves it. Where the
cache is not Redis (the unit tests' in-memory cache) DRF's own counting runs.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.core.cache import caches
from rest_framework import throttling

from access.redis_cache import cache_redis_client

# KEYS[1]: the client's window; ARGV: now, window seconds, limit, a member unique to this request.
# Returns {1} when the request is counted, {0, oldest} when it is refused (a rate of 0: now).
_WINDOW_SCRIPT = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZCARD', key) < tonumber(ARGV[3]) then
  redis.call('ZADD', key, now, ARGV[4])
  redis.call('PEXPIRE', key, math.ceil(window * 1000))
  return {1}
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
return {0, oldest[2] or ARGV[1]}
"""

_script: Any = None  # the script object, registered once; it runs on any client (redis-py sends its hash)


def _window_count(client: Any, key: str, now: float, duration: int, limit: int) -> list[Any]:
    global _script
    if _script is None:
        _script = client.register_script(_WINDOW_SCRIPT)
    return _script(keys=[key], args=[now, duration, limit, uuid.uuid4().hex], client=client)


class AtomicSimpleRateThrottle(throttling.SimpleRateThrottle):
    """SimpleRateThrottle's allow_request and wait, counted by _WINDOW_SCRIPT. Comes after DRF's
    throttle in each class below, so a scoped throttle sets its scope and rate first."""

    _wait: float | None = None
    num_requests: int  # set by SimpleRateThrottle from the rate
    duration: int

    def allow_request(self, request: Any, view: Any) -> bool:
        client = cache_redis_client()
        if client is None:
            return super().allow_request(request, view)
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        now = self.timer()
        # Not DRF's own key: a window DRF counted before (a list) stays where it is, and expires.
        window = caches["default"].make_key(f"window:{key}")
        answer = _window_count(client, window, now, self.duration, self.num_requests)
        if int(answer[0]) == 1:
            self._wait = None
            return True
        self._wait = max(float(answer[1]) + self.duration - now, 0.0)
        return False

    def wait(self) -> float | None:
        if cache_redis_client() is None:
            return super().wait()
        return self._wait


class AnonRateThrottle(throttling.AnonRateThrottle, AtomicSimpleRateThrottle):
    pass


class UserRateThrottle(throttling.UserRateThrottle, AtomicSimpleRateThrottle):
    pass


class ScopedRateThrottle(throttling.ScopedRateThrottle, AtomicSimpleRateThrottle):
    pass
