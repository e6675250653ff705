"""One credential's list requests in flight are bounded before they queue for the process's one sync
thread (access/in_flight.py); other users, single-job reads and anonymous requests are not held."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from asgiref.sync import async_to_sync

from access.in_flight import LIST_REQUESTS_IN_FLIGHT, ListRequestsInFlight


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


def test_a_flood_of_list_requests_is_answered_429_past_the_bound_and_others_pass():
    async def scenario() -> tuple[list[int], int, int, int, int]:
        inner = SlowApp()
        app = ListRequestsInFlight(inner)
        flood = [asyncio.create_task(request(app, "/api/jobs/", "ap_flood")) for _ in range(5)]
        others = [
            asyncio.create_task(request(app, "/api/jobs/", "ap_other")),
            asyncio.create_task(request(app, "/api/jobs/5b0c/", "ap_flood")),  # one job: not a list
            asyncio.create_task(request(app, "/api/jobs/", None)),  # anonymous: the rate throttle's
        ]
        await asyncio.sleep(0.05)
        reached = inner.reached
        inner.release.set()
        answers = await asyncio.gather(*flood)
        statuses = sorted(status for status, _ in answers)
        refused = next(body for status, body in answers if status == 429)
        other_statuses = [status for status, _ in await asyncio.gather(*others)]
        # Once answered, the credential may list again.
        again, _ = await request(app, "/api/jobs/", "ap_flood")
        assert "list requests at a time" in json.loads(refused)["detail"]
        return statuses, reached, other_statuses.count(200), again, len(app.in_flight)

    statuses, reached, others_ok, again, held = async_to_sync(scenario)()
    assert statuses == [200] * LIST_REQUESTS_IN_FLIGHT + [429] * (5 - LIST_REQUESTS_IN_FLIGHT)
    assert reached == LIST_REQUESTS_IN_FLIGHT + 3
    assert others_ok == 3 and again == 200 and held == 0
