"""One credential's list requests in flight are bounded before they queue for the process's one sync
thread (access/in_flight.py): a few more wait their turn in order, the rest are answered 429; other
users, single-job reads and anonymous requests are not held."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from asgiref.sync import async_to_sync

from access import in_flight
from access.in_flight import LIST_REQUESTS_IN_FLIGHT, LIST_REQUESTS_WAITING, ListRequestsInFlight


class SlowApp:
    """An application that answers 200 once released, counting what reached it."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.reached = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.reached += 1
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def scope(path: str, key: str | None) -> dict[str, Any]:
    headers = [(b"x-api-key", key.encode())] if key else []
    return {"type": "http", "method": "GET", "path": path, "headers": headers}


async def request(app: Any, path: str, key: str | None) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    await app(scope(path, key), receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_a_flood_of_list_requests_waits_its_turn_past_the_bound_then_is_answered_429_and_others_pass():
    flooding = LIST_REQUESTS_IN_FLIGHT + LIST_REQUESTS_WAITING + 3

    async def scenario() -> tuple[list[int], int, int, int, int, int]:
        inner = SlowApp()
        app = ListRequestsInFlight(inner)
        flood = [asyncio.create_task(request(app, "/api/jobs/", "ap_flood")) for _ in range(flooding)]
        others = [
            asyncio.create_task(request(app, "/api/jobs/", "ap_other")),
            asyncio.create_task(request(app, "/api/jobs/5b0c/", "ap_flood")),  # one job: not a list
            asyncio.create_task(request(app, "/api/jobs/", None)),  # anonymous: the rate throttle's
        ]
        await asyncio.sleep(0.05)
        reached = inner.reached
        inner.release.set()
        other_statuses = [status for status, _ in await asyncio.gather(*others)]
        answers = await asyncio.gather(*flood)
        statuses = sorted(status for status, _ in answers)
        refused = next(body for status, body in answers if status == 429)
        # Once answered, the credential may list again.
        again, _ = await request(app, "/api/jobs/", "ap_flood")
        assert "list requests at a time" in json.loads(refused)["detail"]
        return statuses, reached, inner.reached, other_statuses.count(200), again, len(app.in_flight) + len(app.waiting)

    statuses, reached, served, others_ok, again, held = async_to_sync(scenario)()
    assert statuses == [200] * (LIST_REQUESTS_IN_FLIGHT + LIST_REQUESTS_WAITING) + [429] * 3
    assert reached == LIST_REQUESTS_IN_FLIGHT + 3, "past the bound, the flood waited outside the application"
    assert served == LIST_REQUESTS_IN_FLIGHT + LIST_REQUESTS_WAITING + 3 + 1, "then those waiting were served"
    assert others_ok == 3 and again == 200 and held == 0


def test_waiting_requests_are_served_in_order_and_one_that_waits_too_long_is_answered_429(monkeypatch):
    monkeypatch.setattr(in_flight, "LIST_WAIT_SECONDS", 0.2)

    async def scenario() -> tuple[list[int], list[int]]:
        order: list[int] = []

        class Numbered(SlowApp):
            async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
                order.append(int(scope["headers"][1][1]))
                await super().__call__(scope, receive, send)

        inner = Numbered()
        app = ListRequestsInFlight(inner)

        async def numbered(n: int) -> int:
            sent: list[dict[str, Any]] = []

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b"", "more_body": False}

            headers = [(b"x-api-key", b"ap_flood"), (b"x-n", str(n).encode())]
            await app({"type": "http", "method": "GET", "path": "/api/jobs/", "headers": headers}, receive, send)
            return int(sent[0]["status"])

        tasks = [asyncio.create_task(numbered(n)) for n in range(LIST_REQUESTS_IN_FLIGHT + 2)]
        await asyncio.sleep(0.4)  # longer than a wait may last: those waiting give up
        inner.release.set()
        return [await task for task in tasks], order

    statuses, order = async_to_sync(scenario)()
    assert statuses == [200] * LIST_REQUESTS_IN_FLIGHT + [429, 429]
    assert order == list(range(LIST_REQUESTS_IN_FLIGHT))


def test_a_client_that_goes_away_while_waiting_gives_its_place_back():
    async def scenario() -> tuple[int, int]:
        inner = SlowApp()
        app = ListRequestsInFlight(inner)
        served = [asyncio.create_task(request(app, "/api/jobs/", "ap_flood")) for _ in range(LIST_REQUESTS_IN_FLIGHT)]
        gone = asyncio.create_task(request(app, "/api/jobs/", "ap_flood"))
        await asyncio.sleep(0.05)
        gone.cancel()
        await asyncio.sleep(0.05)
        inner.release.set()
        await asyncio.gather(*served)
        status, _ = await request(app, "/api/jobs/", "ap_flood")
        return status, len(app.in_flight) + len(app.waiting)

    status, held = async_to_sync(scenario)()
    assert status == 200 and held == 0
