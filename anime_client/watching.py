"""Follow one job to its end: the websocket first (a snapshot, then every change), REST polling when
the websocket cannot be opened or keeps closing.

The server's broadcasts are at-most-once, so a quiet socket is checked against REST now and then,
and a reconnect asks for what it missed (`?after=<seq>`). States go out in `version` order, each
once: a caller sees every state it is given as newer than the last.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

import websocket

from anime_client.api_session import ApiSession
from anime_client.errors import AnimeClientError, RateLimited, ServerError, ServerUnreachable, WaitTimeout
from anime_client.states import JobState
from anime_client.terminal_text import one_line

CONNECT_TIMEOUT = 10.0
# No message for this long: ask REST, in case a broadcast was lost.
QUIET_SECONDS = 15.0
POLL_SECONDS = 1.0
RECONNECTS = 3
# How long polling rides out an unreachable or failing server (a restart) before giving up.
PATIENCE_SECONDS = 120.0


class SocketLike(Protocol):
    """What the watch needs of a websocket (websocket-client's WebSocket, or a test's fake)."""

    def recv(self) -> str | bytes: ...

    def settimeout(self, timeout: float | None) -> None: ...

    def close(self) -> None: ...


SocketOpener = Callable[[str, Mapping[str, str], float], SocketLike]


def open_websocket(url: str, headers: Mapping[str, str], timeout: float) -> SocketLike:
    # websocket-client sends an Origin of the server's own address, which its origin check accepts.
    return websocket.create_connection(url, timeout=timeout, header=[f"{k}: {v}" for k, v in headers.items()])


class JobWatch:
    def __init__(
        self,
        api: ApiSession,
        job_id: str,
        *,
        open_socket: SocketOpener = open_websocket,
        poll_seconds: float = POLL_SECONDS,
        quiet_seconds: float = QUIET_SECONDS,
        patience_seconds: float = PATIENCE_SECONDS,
        timeout: float | None = None,
        on_notice: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api = api
        self.job_id = job_id
        self.open_socket = open_socket
        self.poll_seconds = poll_seconds
        self.quiet_seconds = quiet_seconds
        self.patience_seconds = patience_seconds
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.timeout = timeout
        self.on_notice = on_notice or (lambda text: None)
        self.sleep = sleep
        self.mode = "websocket"
        self.fallback_notice = ""
        self.last_version = -1
        self.last_seq = 0
        self.last_status = ""

    def states(self) -> Iterator[JobState]:
        failed_connects = 0
        while True:
            socket = self._connect()
            if socket is None:
                yield from self._polled()
                return
            try:
                for state in self._from_socket(socket):
                    failed_connects = 0
                    yield state
                    if state.finished:
                        return
            finally:
                socket.close()
            failed_connects += 1
            if failed_connects > RECONNECTS:
                self.on_notice("the websocket keeps closing; following the job by polling instead")
                yield from self._polled()
                return
            self.sleep(min(2.0**failed_connects, 10.0))

    def _connect(self) -> SocketLike | None:
        path = f"ws/jobs/{self.job_id}/" + (f"?after={self.last_seq}" if self.last_seq else "")
        try:
            return self.open_socket(self.api.websocket_url(path), {"X-API-Key": self.api.api_key}, CONNECT_TIMEOUT)
        except (websocket.WebSocketException, OSError, ValueError) as exc:
            why = one_line(str(exc), 200) or type(exc).__name__
            # Said once polling works: when the server is down, that error is the one line to show.
            self.fallback_notice = f"no live updates ({why}); polling every {self.poll_seconds:g} s"
            return None

    def _from_socket(self, socket: SocketLike) -> Iterator[JobState]:
        """States from one open socket until it closes; the final state ends it."""
        while True:
            self._check_deadline()
            socket.settimeout(self._wait_at_most(self.quiet_seconds))
            try:
                text = socket.recv()
            except (websocket.WebSocketTimeoutException, TimeoutError):
                yield from self._checked_by_rest()
                continue
            except (websocket.WebSocketException, OSError):
                return
            if not text:  # a close frame
                return
            try:
                message = json.loads(text)
            except ValueError:
                continue
            for event in message.get("events") or ():
                self.last_seq = max(self.last_seq, int(event.get("seq") or 0))
            if message.get("job"):
                state = JobState.from_api(message["job"])
                self.last_seq = max(self.last_seq, state.seq)
                if self._fresh(state):
                    yield state
                if state.finished:
                    return

    def _checked_by_rest(self) -> Iterator[JobState]:
        self._check_deadline()
        try:
            state = self._fetch()
        except AnimeClientError:
            return  # the socket is still open: it may yet tell
        if self._fresh(state) or state.finished:
            yield state

    def _polled(self) -> Iterator[JobState]:
        self.mode = "polling"
        failing_since: float | None = None
        while True:
            self._check_deadline()
            try:
                state = self._fetch()
            except RateLimited as exc:
                self.sleep(exc.retry_after or self.poll_seconds * 5)
                continue
            except (ServerUnreachable, ServerError) as exc:
                # Ridden out only once the job has been seen: a restart mid-watch, not a wrong URL.
                failing_since = failing_since or time.monotonic()
                if self.last_version < 0 or time.monotonic() - failing_since > self.patience_seconds:
                    raise
                self.on_notice(f"{exc}; trying again")
                self.sleep(max(self.poll_seconds, 2.0))
                continue
            failing_since = None
            if self.fallback_notice:
                self.on_notice(self.fallback_notice)
                self.fallback_notice = ""
            if self._fresh(state) or state.finished:
                yield state
            if state.finished:
                return
            self.sleep(self.poll_seconds)

    def _fetch(self) -> JobState:
        return JobState.from_api(self.api.json("GET", f"api/jobs/{self.job_id}/", what=f"job {self.job_id}"))

    def _fresh(self, state: JobState) -> bool:
        self.last_status = state.status
        if state.version <= self.last_version:
            return False
        self.last_version = state.version
        return True

    def _wait_at_most(self, seconds: float) -> float:
        if self.deadline is None:
            return seconds
        return max(0.05, min(seconds, self.deadline - time.monotonic()))

    def _check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise WaitTimeout(f"job {self.job_id} is still {self.last_status or 'unfinished'} after {self.timeout:g} s")
