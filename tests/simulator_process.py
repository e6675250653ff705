"""Run the ComfyUI simulator as a real process, and talk to it the way a client does.

A pytest plugin (listed in tests/conftest.py's `pytest_plugins`) providing the `comfyui_sim`
fixture: a fresh simulator process per test, on a free port, writing into the test's tmp dir.
`SimulatorProcess` is usable outside pytest too (benchmarks, manual runs):

    with SimulatorProcess() as sim:
        requests.post(sim.url + "/prompt", json={...})

`EventLog`, `RecordingSocket` and `http_exchange` record what a client sees in the format of
shared/comfyui-traces/*.jsonl, so simulator runs can be compared with the recorded ComfyUI traffic.
"""

from __future__ import annotations

import base64
import json
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import requests
import websocket

REPO_ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT = 20.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class PortTakenError(RuntimeError):
    pass


class SimulatorProcess:
    """`python -m devtools.simulator` in a subprocess; restart() keeps the port, like restarting ComfyUI."""

    def __init__(
        self,
        port: int | None = None,
        output_dir: Path | None = None,
        extra_args: Sequence[str] = (),
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        # A port we picked may be taken by someone else before the simulator binds it; then we
        # may pick another, but only before the first start (restart() must keep the port).
        self._may_change_port = port is None
        self.output_dir = output_dir or Path(tempfile.mkdtemp(prefix="comfyui-sim-")) / "output"
        self.extra_args = list(extra_args)
        self.log_path = self.output_dir.parent / f"simulator-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

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
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        command = [
            sys.executable,
            "-m",
            "devtools.simulator",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--output-dir",
            str(self.output_dir),
            *self.extra_args,
        ]
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_until_ready(log_start)

    def stop(self) -> None:
        """Graceful stop (SIGTERM), SIGKILL if it lingers."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
        self._process = None

    def kill(self) -> None:
        """SIGKILL, as when ComfyUI crashes or its container is killed: nothing is flushed."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=5)
        self._process = None

    def restart(self) -> None:
        """Kill and start again on the same port: the queue and history are gone, files stay."""
        self.kill()
        self.start()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _wait_until_ready(self, log_start: int) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                self._process = None
                startup_log = self.log_text()[log_start:]
                if "address already in use" in startup_log:
                    raise PortTakenError(f"port {self.port} is taken")
                raise RuntimeError(f"simulator exited during startup:\n{startup_log[-3000:]}")
            try:
                if requests.get(self.url + "/prompt", timeout=0.5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(
            f"simulator did not answer on {self.url} within {STARTUP_TIMEOUT}s:\n{self.log_text()[-3000:]}"
        )

    def __enter__(self) -> SimulatorProcess:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@pytest.fixture
def comfyui_sim(tmp_path: Path) -> Iterator[SimulatorProcess]:
    """A fresh simulator process for one test (own port, own output dir, empty queue and history)."""
    sim = SimulatorProcess(output_dir=tmp_path / "comfyui" / "output")
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


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
                    raise TimeoutError("no matching event within %.1fs; last events:\n%s" % (timeout, "\n".join(tail)))
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
    """The fields the traces record for a binary frame (see shared/comfyui-traces/README.md)."""
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

    def __init__(self, sim: SimulatorProcess, client_id: str | None = None) -> None:
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
