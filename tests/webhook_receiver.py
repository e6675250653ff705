"""A webhook receiver for the tests: a small threading HTTP server on 127.0.0.1 that records every
request (headers and body as received) and answers each one by its plan.

    with WebhookReceiver(statuses=[500, 500, 204]) as receiver:   # then 204 for the rest
        ... receiver.url ...
        receiver.wait_for(3)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (a read timeout under test) is expected, not a failure


class WebhookReceiver:
    def __init__(
        self,
        statuses: Sequence[int] = (),
        *,
        default_status: int = 204,
        answer: bytes = b"",
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> None:
        self.plan = list(statuses)
        self.default_status = default_status
        self.answer = answer
        self.headers = headers or {}
        self.delay = delay  # seconds before answering
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="webhook-receiver", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/anime"

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def requests(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.requests()
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"the receiver got {len(self.requests())} requests in {timeout}s, expected {count}")

    def _respond(self, received: Received) -> int:
        with self._lock:
            self.received.append(received)
            return self.plan.pop(0) if self.plan else self.default_status

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {name.lower(): value for name, value in self.headers.items()}
                status = receiver._respond(Received(self.path, headers, body, time.monotonic()))
                time.sleep(receiver.delay)
                self.send_response(status)
                for name, value in receiver.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(receiver.answer)))
                self.end_headers()
                self.wfile.write(receiver.answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the tests assert on what was received

        return Handler
