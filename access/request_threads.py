"""A web process runs its requests' sync code (middleware, views, signals) on a few kept threads,
each keeping its database connection, not on a new thread per request.

Django's ASGI handler enters asgiref's ThreadSensitiveContext for each request without an executor,
so asgiref starts a thread for that request alone; Django's database connections belong to a
thread, so every request connected to PostgreSQL anew and left the connection to the garbage
collector. Measured: PostgreSQL's sessions counter rose by one per request served, and a new
connection costs its connect (4.5 ms here) plus a new server process whose catalog caches are cold
for the request's queries. Here each HTTP request runs inside a ThreadSensitiveContext given the
executor of one of WEB_SYNC_THREADS kept threads (the one with the fewest requests in flight);
Django's own context inside it then changes nothing (asgiref: only the outermost one counts). A
thread's connection lives on under CONN_MAX_AGE with Django's health checks, as a Celery worker's
does. More requests than threads in flight share threads, in turn.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext

from access.kept_connections import thread_started


class RequestThreads:
    def __init__(self, app: Any, threads: int) -> None:
        self.app = app
        self.executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"request-{n}", initializer=thread_started)
            for n in range(threads)
        ]
        self.in_flight = [0] * threads

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "http" or not self.executors:
            return await self.app(scope, receive, send)
        index = min(range(len(self.executors)), key=self.in_flight.__getitem__)
        self.in_flight[index] += 1
        try:
            async with ThreadSensitiveContext(executor=self.executors[index]):
                return await self.app(scope, receive, send)
        finally:
            self.in_flight[index] -= 1
