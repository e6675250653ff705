"""Request rates counted in Redis (access.throttles): parallel requests of one user are each counted
(DRF's own counting read and wrote back a list, and requests in flight together overwrote each
other's count), a refused request is not counted, and Retry-After is when the oldest request in the
window leaves it."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from rest_framework.test import APIClient

from access import throttles
from access.redis_cache import cache_redis_client
from tests.factories import UserFactory, api_key_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def rates(throttle_rates) -> dict[str, str]:
    return throttle_rates(anon="100/min", user="5/min", submit="100/min")


def client_of(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def test_twenty_parallel_requests_of_one_user_get_exactly_the_rate(rates):
    assert cache_redis_client() is not None  # the Redis cache of the settings
    key = api_key_for(UserFactory.create())
    start = threading.Barrier(20)
    codes: list[int] = []

    def request() -> None:
        client = client_of(key)
        start.wait()
        codes.append(client.get("/api/jobs/").status_code)

    threads = [threading.Thread(target=request) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(codes) == [200] * 5 + [429] * 15


def test_a_refused_request_is_not_counted_and_retry_after_is_when_the_oldest_leaves(rates, monkeypatch):
    rates["user"] = "2/min"
    clock = {"now": 1_900_000_000.0}
    monkeypatch.setattr(throttles.AtomicSimpleRateThrottle, "timer", lambda self: clock["now"])
    api = client_of(api_key_for(UserFactory.create()))

    def at(seconds: float) -> Any:
        clock["now"] = 1_900_000_000.0 + seconds
        return api.get("/api/jobs/")

    assert at(0).status_code == 200
    assert at(20).status_code == 200
    refused = at(40)
    assert refused.status_code == 429
    assert refused["Retry-After"] == "20"  # the request at 0 leaves the 60-s window at 60
    # At 61 only the request at 20 is in the window: the refused one at 40 was not counted.
    assert at(61).status_code == 200
    assert at(62).status_code == 429


def test_each_user_has_a_window_of_their_own(rates):
    flooder, neighbour = client_of(api_key_for(UserFactory.create())), client_of(api_key_for(UserFactory.create()))
    assert [flooder.get("/api/jobs/").status_code for _ in range(6)] == [200] * 5 + [429]
    assert neighbour.get("/api/jobs/").status_code == 200


def test_a_window_drf_counted_before_an_upgrade_breaks_nothing(rates):
    from django.core.cache import cache

    user = UserFactory.create()
    cache.set(f"throttle_user_{user.pk}", [1_900_000_000.0] * 3, 60)  # DRF's list, under DRF's key
    api = client_of(api_key_for(user))
    assert [api.get("/api/jobs/").status_code for _ in range(6)] == [200] * 5 + [429]


def test_a_rate_of_zero_refuses_every_request_for_the_whole_window(rates):
    rates["user"] = "0/min"
    refused = client_of(api_key_for(UserFactory.create())).get("/api/jobs/")
    assert refused.status_code == 429
    assert refused["Retry-After"] == "60"
