"""Run the ComfyUI simulator, in this process or as a process of its own, and talk to it the way a
client does.

- `InProcessSimulator`: the simulator's aiohttp application served from a thread of the test
  process, on a free loopback port (the unit tier's `comfyui_sim`: no subprocess, starts in
  milliseconds).
- `SimulatorProcess`: `python -m devtools.simulator` as a real process (the integration tier's
  `comfyui_sim` and `simulator_session`, the fault-injection rigs, benchmarks):

    with SimulatorProcess() as sim:
        requests.post(sim.url + "/prompt", json={...})

Both have the same interface (url, ws_url, output_dir, extra_args, start, stop, kill, restart).
`EventLog`, `RecordingSocket` and `http_exchange` record what a client sees in the format of
tests/data/comfyui-traces/*.jsonl, so simulator runs can be compared with the recorded ComfyUI traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import struct
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import requests
import websocket

from devtools.processes import REPO, Process, ProcessFailed, free_port

REPO_ROOT = REPO
STARTUP_TIMEOUT = 20.0


class PortTakenError(RuntimeError):
    pass


class _Simulator:
    """What both ways of running the simulator share: where it listens, where it writes."""

    def __init__(
        self,
        port: int | None = None,
        output_dir: Path | None = None,
        extra_args: Sequence[str] = (),
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.port = port or 0
        self.output_dir = output_dir or Path(tempfile.mkdtemp(prefix="comfyui-sim-")) / "output"
        self.extra_args = list(extra_args)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    def is_running(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    def restart(self) -> None:
        """Kill and start again on the same port: the queue and history are gone, files stay."""
        self.kill()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class InProcessSimulator(_Simulator):
    """The simulator's application on an event loop in a thread of this process.

    The first start binds a free port (port 0) and keeps it for restarts. A kill here is a stop:
    the simulator's sockets are closed, not reset, and its queue and history are gone all the same.
    """

    def __init__(
        self,
        port: int | None = None,
        output_dir: Path | None = None,
        extra_args: Sequence[str] = (),
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(port, output_dir, extra_args, host)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: Any = None

    def is_running(self) -> bool:
        return self._runner is not None

    def start(self) -> None:
        if self.is_running():
            raise RuntimeError(f"simulator already running on {self.url}")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="comfyui-simulator", daemon=True)
        self._thread.start()
        try:
            self._runner = asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(STARTUP_TIMEOUT)
        except BaseException:
            self._stop_loop()
            raise

    async def _serve(self) -> Any:
        from aiohttp import web

        from devtools.simulator.options import add_arguments, options_from_arguments
        from devtools.simulator.server import build_app

        parser = argparse.ArgumentParser()
        add_arguments(parser)
        arguments = ["--host", self.host, "--port", str(self.port), "--output-dir", str(self.output_dir)]
        options = options_from_arguments(vars(parser.parse_args([*arguments, *self.extra_args])))
        runner = web.AppRunner(build_app(options), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as error:
            await runner.cleanup()
            raise PortTakenError(f"port {self.port} is taken: {error}") from error
        self.port = int(runner.addresses[0][1])
        return runner

    def stop(self) -> None:
        if self._runner is not None and self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(15)
        self._runner = None
        self._stop_loop()

    kill = stop

    def _stop_loop(self) -> None:
        if self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop.close()
        self._loop, self._thread = None, None


class SimulatorProcess(_Simulator):
    """`python -m devtools.simulator` in a subprocess; restart() keeps the port, like restarting ComfyUI."""

    def __init__(
        self,
        port: int | None = None,
        output_dir: Path | None = None,
        extra_args: Sequence[str] = (),
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(port, output_dir, extra_args, host)
        self.port = port or free_port(host)
        # A port we picked may be taken by someone else before the simulator binds it; then we
        # may pick another, but only before the first start (restart() must keep the port).
        self._may_change_port = port is None
        self.log_path = self.output_dir.parent / f"simulator-{self.port}.log"
        self._process: Process | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.alive()

    def start(self) -> None:
        if self.is_running():
            raise RuntimeError(f"simulator already running on {self.url}")
        for attempt in range(3):
            try:
                self._spawn()
                break
            except PortTakenError:
                if not self._may_change_port or attempt == 2:
                    raise
                self.port = free_port(self.host)
        self._may_change_port = False

    def _spawn(self) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "devtools.simulator", "--host", self.host, "--port", str(self.port)]
        argv += ["--output-dir", str(self.output_dir), *self.extra_args]
        process = Process(argv, log_path=self.log_path, name="the ComfyUI simulator")
        self._process = process.start()
        try:
            process.wait_for_url(self.url + "/prompt", timeout=STARTUP_TIMEOUT)
        except ProcessFailed:
            process.kill()
            self._process = None
            if "address already in use" in process.output():
                raise PortTakenError(f"port {self.port} is taken") from None
            raise

    def stop(self) -> None:
        """Graceful stop (SIGTERM), SIGKILL if it lingers."""
        if self._process is not None:
            self._process.stop(grace=5)
        self._process = None

    def kill(self) -> None:
        """SIGKILL, as when ComfyUI crashes or its container is killed: nothing is flushed."""
        if self._process is not None:
            self._process.kill()
        self._process = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# --- recording a client's view, in the traces' format --------------------------------------------


class EventLog:
    """Events as the traces write them ({"t", "kind", ...}), appended from several threads."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._started = time.monotonic()
        self._changed = threading.Condition()

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"t": round(time.monotonic() - self._started, 4), "kind": kind, **fields}
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()
        return event

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0, after: int = 0
    ) -> dict[str, Any]:
        """The first event at index >= `after` matching `predicate`, waiting for it if needed."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.events[after:]:
                    if predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    tail = [json.dumps(e)[:200] for e in self.events[-10:]]
                    raise TimeoutError(f"no matching event within {timeout:.1f}s; last events:\n" + "\n".join(tail))
                self._changed.wait(remaining)

    def count(self, predicate: Callable[[dict[str, Any]], bool]) -> int:
        with self._changed:
            return sum(1 for event in self.events if predicate(event))

    def messages(self, message_type: str | None = None) -> list[dict[str, Any]]:
        """Received text frames ({"type", "data"}), optionally of one type."""
        with self._changed:
            return [
                e["msg"]
                for e in self.events
                if e["kind"] == "ws" and (message_type is None or e["msg"]["type"] == message_type)
            ]


def ws_message(message_type: str, **data: Any) -> Callable[[dict[str, Any]], bool]:
    """Predicate: a received message of this type whose data has these values."""

    def matches(event: dict[str, Any]) -> bool:
        if event["kind"] != "ws" or event["msg"]["type"] != message_type:
            return False
        return all(event["msg"]["data"].get(key) == value for key, value in data.items())

    return matches


class RecordingSocket:
    """A client websocket (`/ws?clientId=`) whose every frame lands in an EventLog."""

    def __init__(self, base_url: str, client_id: str | None, log: EventLog) -> None:
        self.url = base_url.replace("http://", "ws://", 1) + "/ws"
        if client_id:
            self.url += f"?clientId={client_id}"
        self.log = log
        self._ws: websocket.WebSocket | None = None
        self._reader: threading.Thread | None = None
        self._closing = False

    def connect(self) -> None:
        self._closing = False
        self._ws = websocket.create_connection(self.url, timeout=10)
        self._ws.settimeout(None)
        self._reader = threading.Thread(target=self._read, args=(self._ws,), daemon=True)
        self._reader.start()

    def send_json(self, message: dict[str, Any]) -> None:
        assert self._ws is not None
        self.log.append("ws_sent", msg=message)
        self._ws.send(json.dumps(message))

    def close(self) -> None:
        """Close from the client side and wait until no more frames can be recorded."""
        if self._ws is None:
            return
        self._closing = True
        try:
            self._ws.send_close()
        except (websocket.WebSocketException, OSError):
            pass
        if self._reader is not None:
            self._reader.join(timeout=5)
        self._ws.shutdown()
        self._ws = None

    def _read(self, ws: websocket.WebSocket) -> None:
        while True:
            try:
                opcode, data = ws.recv_data()
            except (websocket.WebSocketException, OSError) as error:
                if not self._closing:
                    self.log.append("ws_error", error=f"{type(error).__name__}: {error}")
                return
            if opcode == websocket.ABNF.OPCODE_TEXT:
                self.log.append("ws", msg=json.loads(data))
            elif opcode == websocket.ABNF.OPCODE_BINARY:
                self.log.append("ws_binary", **describe_binary_frame(data))
            elif opcode == websocket.ABNF.OPCODE_CLOSE:
                if not self._closing:
                    self.log.append("ws_error", error="closed by server")
                return


def describe_binary_frame(frame: bytes) -> dict[str, Any]:
    """The fields the traces record for a binary frame (see tests/data/comfyui-traces/README.md)."""
    event_type = struct.unpack(">I", frame[:4])[0]
    described: dict[str, Any] = {"event_type": event_type, "len": len(frame), "b64": base64.b64encode(frame).decode()}
    if event_type == 1:
        described["image_type"] = struct.unpack(">I", frame[4:8])[0]
    elif event_type == 4:
        length = struct.unpack(">I", frame[4:8])[0]
        described["metadata"] = json.loads(frame[8 : 8 + length])
    return described


def http_exchange(
    log: EventLog, base_url: str, method: str, path: str, body: Any = None, raw: bytes | None = None
) -> requests.Response | None:
    """One HTTP call recorded as a trace "http" event ("http_error" if the server is unreachable)."""
    try:
        response = requests.request(method, base_url + path, json=body if raw is None else None, data=raw, timeout=10)
    except requests.ConnectionError as error:
        log.append("http_error", method=method, path=path, error=type(error).__name__)
        return None
    try:
        decoded: Any = response.json()
    except ValueError:
        decoded = response.text
    log.append("http", method=method, path=path, request=body, status=response.status_code, response=decoded)
    return response


class SimulatorClient:
    """A client as the product's tracker is one: one clientId, its socket, HTTP calls, all recorded."""

    def __init__(self, sim: _Simulator, client_id: str | None = None) -> None:
        self.sim = sim
        self.log = EventLog()
        self.client_id = client_id or str(uuid.uuid4())
        self.socket = RecordingSocket(sim.url, self.client_id, self.log)

    def connect(self) -> None:
        self.socket.connect()
        self.log.wait_for(ws_message("status", sid=self.client_id))

    def negotiate_preview_metadata(self) -> None:
        mark = len(self.log.events)
        self.socket.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
        self.log.wait_for(ws_message("feature_flags"), after=mark)

    def drop_socket(self) -> None:
        self.socket.close()
        self.log.append("ws_closed_by_client")

    def reconnect(self) -> None:
        mark = len(self.log.events)
        self.log.append("ws_reconnected")
        self.socket.connect()
        self.log.wait_for(ws_message("status", sid=self.client_id), after=mark)

    def http(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Any:
        """The decoded JSON answer (None for non-JSON answers and refused connections)."""
        response = http_exchange(self.log, self.sim.url, method, path, body, raw)
        if response is None or response.headers.get("Content-Type", "").split(";")[0] != "application/json":
            return None
        return response.json()

    def submit(self, request: dict[str, Any]) -> str:
        """POST /prompt with this client's id; `request` holds "prompt" and optional fields."""
        answer = self.http("POST", "/prompt", {**request, "client_id": self.client_id})
        if not answer or "prompt_id" not in answer:
            raise AssertionError(f"prompt rejected: {answer}")
        return str(answer["prompt_id"])

    def wait_progress(self, prompt_id: str, count: int, timeout: float = 15.0) -> None:
        def enough(event: dict[str, Any]) -> bool:
            return self.log.count(ws_message("progress", prompt_id=prompt_id)) >= count

        self.log.wait_for(enough, timeout=timeout)

    def wait_finished(self, prompt_id: str, timeout: float = 30.0) -> None:
        """Until `executing {node: null}` for the prompt: ComfyUI's end-of-prompt marker."""
        self.log.wait_for(ws_message("executing", node=None, prompt_id=prompt_id), timeout=timeout)

    def finish(self) -> list[dict[str, Any]]:
        """Stop listening, without recording a client-side close; returns everything recorded."""
        self.socket.close()
        return self.log.events
