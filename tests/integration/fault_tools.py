"""Tools for the fault-injection tests (tests/integration/test_fault_injection.py).

- `ComfyProxy`: a transparent HTTP + websocket proxy between the GPU workers and the ComfyUI
  simulator. It records every `POST /prompt` (so prompts can be counted per prompt_id whatever
  happens to ComfyUI's own memory), every `POST /interrupt`, and injects faults at the ComfyUI
  boundary only: websockets severed (at once, or with ComfyUI noticing the dead socket late),
  websocket upgrades refused, HTTP answers replaced by a 500, by invalid JSON, by no answer at all,
  or delayed.
- `PrivateRedis`: a throw-away `redis-server` on a free port, without persistence, that can be
  restarted (everything in it is then gone), so the machine's shared Redis is never touched.
- `BeatProcess`: a real `celery beat` with its own environment (workers are `tests.system.CeleryWorker`,
  which can be SIGKILLed as a whole process group, or only their prefork pool child). All of them
  are started and stopped by `devtools.processes.Process`.
- `FaultMatrix`: the per-scenario table (runs, jobs, completed, failed, lost, duplicated prompts)
  written to test-artifacts/fault-matrix.txt.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import requests
from aiohttp import WSMsgType, web

from devtools.processes import Process, free_port

PROMPT_PATHS = ("/prompt", "/api/prompt")
INTERRUPT_PATHS = ("/interrupt", "/api/interrupt")
HOP_BY_HOP = {
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "accept-encoding",
    "content-encoding",
    "proxy-connection",
    "te",
    "trailer",
}


# --- the ComfyUI proxy ------------------------------------------------------------------------


@dataclass(eq=False)
class _WsPair:
    client_id: str
    downstream: web.WebSocketResponse
    upstream: aiohttp.ClientWebSocketResponse
    transport: Any
    opened: float = field(default_factory=time.monotonic)


@dataclass
class Submission:
    at: float  # wall clock (time.time()), comparable with the database's timestamps
    prompt_id: str | None
    client_id: str | None
    forwarded: bool
    status: int | None


@dataclass
class Fault:
    """What the proxy does instead of forwarding. mode: "500", "badjson", "hang", "reset"."""

    mode: str
    http: bool = True
    websocket: bool = True
    paths: tuple[str, ...] = ()  # empty: every path

    def applies(self, path: str, is_websocket: bool) -> bool:
        if is_websocket and not self.websocket:
            return False
        if not is_websocket and not self.http:
            return False
        return not self.paths or any(path == p or path.startswith(p + "/") for p in self.paths)


class ComfyProxy:
    """A proxy in front of one ComfyUI; runs its own event loop in a background thread."""

    def __init__(self, upstream: str, host: str = "127.0.0.1") -> None:
        self.upstream = upstream.rstrip("/")
        self.host = host
        self.port = free_port(host)
        self.submissions: list[Submission] = []
        self.interrupts: list[tuple[float, str | None]] = []
        self.websocket_opens: list[tuple[float, str]] = []
        self.fault: Fault | None = None
        self.delay_seconds = 0.0
        self.delay_paths: tuple[str, ...] = ()
        self._pairs: set[_WsPair] = set()
        self._closing: set[asyncio.Task] = set()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._release: asyncio.Event | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self.journal: list[str] = []  # what the proxy did, with wall-clock times (see dump())

    def _note(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime()) + f".{int(time.time() * 1000) % 1000:03d}"
        with self._lock:
            self.journal.append(f"{stamp} {text}")

    def dump(self, path: Path) -> None:
        with self._lock:
            path.write_text("\n".join(self.journal) + "\n")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- control, from the test's thread -------------------------------------------------------

    def start(self) -> ComfyProxy:
        self._thread = threading.Thread(target=self._serve, name=f"comfy-proxy-{self.port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(15) or self._start_error is not None:
            raise RuntimeError(f"proxy did not start: {self._start_error!r}")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        if self._loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(15)
            except Exception:
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    def set_fault(self, fault: Fault | None) -> None:
        """Inject a fault (None: forward everything again; requests left hanging are dropped)."""
        self._note(f"fault {fault}")
        self.fault = fault
        if fault is None or fault.mode != "hang":
            self._call(self._release_hung)

    def set_delay(self, seconds: float, paths: tuple[str, ...] = ()) -> None:
        self._note(f"delay {seconds}s on {paths or 'every path'}")
        self.delay_seconds, self.delay_paths = seconds, paths

    def sever_websockets(self, *, upstream_close_delay: float = 0.0) -> int:
        """Drop every proxied websocket: the worker's side is reset at once (as a broken TCP
        connection is); ComfyUI's side is closed after `upstream_close_delay` seconds (ComfyUI
        notices a dead client only when it next reads or writes). Returns how many were cut."""
        return self._call(self._sever(upstream_close_delay))

    def open_websockets(self, client_id: str | None = None) -> int:
        with self._lock:
            return sum(1 for p in self._pairs if client_id is None or p.client_id == client_id)

    def posts(self, prompt_id: str) -> int:
        """How many times `POST /prompt` reached ComfyUI with this prompt_id."""
        with self._lock:
            return sum(1 for s in self.submissions if s.prompt_id == prompt_id and s.forwarded)

    def forwarded_submissions(self) -> list[Submission]:
        with self._lock:
            return [s for s in self.submissions if s.forwarded]

    def interrupts_for(self, prompt_id: str) -> list[float]:
        with self._lock:
            return [at for at, pid in self.interrupts if pid == prompt_id]

    def _call(self, what: Any) -> Any:
        assert self._loop is not None, "proxy not started"
        if asyncio.iscoroutine(what):
            return asyncio.run_coroutine_threadsafe(what, self._loop).result(15)

        async def call() -> Any:
            return what()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(15)

    # --- the server, on its own loop ---------------------------------------------------------

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._startup())
        except BaseException as exc:
            self._start_error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()

    async def _startup(self) -> None:
        self._release = asyncio.Event()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5), auto_decompress=False
        )
        app = web.Application(client_max_size=200 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def _shutdown(self) -> None:
        self._release_hung()
        for pair in list(self._pairs):
            await self._close_pair(pair, 0.0)
        await asyncio.gather(*self._closing, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _release_hung(self) -> None:
        if self._release is not None:
            self._release.set()
            self._release = asyncio.Event()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        is_websocket = request.headers.get("Upgrade", "").lower() == "websocket"
        path = request.path
        if self.delay_seconds and (not self.delay_paths or path in self.delay_paths):
            await asyncio.sleep(self.delay_seconds)
        body = await request.read()
        if request.method == "POST" and path in INTERRUPT_PATHS:
            self._note(f"POST {path} {body[:200]!r}")
            with self._lock:
                self.interrupts.append((time.time(), _json_field(body, "prompt_id")))
        fault = self.fault
        if fault is not None and fault.applies(path, is_websocket):
            if request.method == "POST" and path in PROMPT_PATHS:
                self._record_submission(body, forwarded=False, status=None)
            return await self._faulty_answer(request, fault)
        if is_websocket:
            return await self._proxy_websocket(request)
        return await self._proxy_http(request, body)

    async def _faulty_answer(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        if fault.mode == "500":
            return web.Response(status=500, text="500 Internal Server Error\n\nServer got itself in trouble")
        if fault.mode == "badjson":
            return web.Response(
                status=200, text="<html><body>Bad Gateway?</body></html>{", content_type="application/json"
            )
        if fault.mode == "hang":
            release = self._release
            assert release is not None
            try:
                await asyncio.wait_for(release.wait(), timeout=600)
            except TimeoutError:
                pass
        # "reset", or a hang that ends: the connection just dies without an answer.
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=502)

    def _record_submission(self, body: bytes, *, forwarded: bool, status: int | None) -> None:
        self._note(f"POST /prompt {_json_field(body, 'prompt_id')} forwarded={forwarded} status={status}")
        with self._lock:
            self.submissions.append(
                Submission(
                    at=time.time(),
                    prompt_id=_json_field(body, "prompt_id"),
                    client_id=_json_field(body, "client_id"),
                    forwarded=forwarded,
                    status=status,
                )
            )

    async def _proxy_http(self, request: web.Request, body: bytes) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            async with self._session.request(
                request.method,
                self.upstream + request.path_qs,
                data=body or None,
                headers=headers,
                allow_redirects=False,
            ) as upstream:
                payload = await upstream.read()
                status = upstream.status
                out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
        except (aiohttp.ClientError, OSError):
            # ComfyUI is down: so is the proxy's answer (the client sees a dropped connection).
            if request.method == "POST" and request.path in PROMPT_PATHS:
                self._record_submission(body, forwarded=False, status=None)
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=502)
        if request.method == "POST" and request.path in PROMPT_PATHS:
            self._record_submission(body, forwarded=True, status=status)
        return web.Response(status=status, body=payload, headers=out_headers)

    async def _proxy_websocket(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        ws_url = self.upstream.replace("http://", "ws://", 1) + request.path_qs
        try:
            upstream = await self._session.ws_connect(ws_url, autoping=True, max_msg_size=0)
        except (aiohttp.ClientError, OSError):
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=502)
        transport = request.transport
        downstream = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await downstream.prepare(request)
        pair = _WsPair(
            client_id=request.rel_url.query.get("clientId", ""),
            downstream=downstream,
            upstream=upstream,
            transport=transport,
        )
        with self._lock:
            self._pairs.add(pair)
            self.websocket_opens.append((time.monotonic(), pair.client_id))
        self._note(f"websocket #{id(pair) % 10000} opened for {pair.client_id}")

        async def up_to_down() -> None:
            async for message in upstream:
                if message.type == WSMsgType.TEXT:
                    await downstream.send_str(message.data)
                elif message.type == WSMsgType.BINARY:
                    await downstream.send_bytes(message.data)
                else:
                    break

        async def down_to_up() -> None:
            async for message in downstream:
                if message.type == WSMsgType.TEXT:
                    await upstream.send_str(message.data)
                elif message.type == WSMsgType.BINARY:
                    await upstream.send_bytes(message.data)
                else:
                    break

        tasks = [asyncio.create_task(up_to_down()), asyncio.create_task(down_to_up())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            ended = "ComfyUI's side" if tasks[0] in done else "the worker's side"
            self._note(f"websocket #{id(pair) % 10000} ended on {ended}")
        except asyncio.CancelledError:
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if pair in self._pairs:
                await self._close_pair(pair, 0.0)
        return downstream

    async def _sever(self, upstream_close_delay: float) -> int:
        with self._lock:
            pairs = list(self._pairs)
        self._note(f"sever {[id(p) % 10000 for p in pairs]} (ComfyUI side closed after {upstream_close_delay}s)")
        for pair in pairs:
            await self._close_pair(pair, upstream_close_delay)
        return len(pairs)

    async def _close_pair(self, pair: _WsPair, upstream_close_delay: float) -> None:
        with self._lock:
            self._pairs.discard(pair)
        if pair.transport is not None:
            pair.transport.abort()

        # Not awaited here: aiohttp's close() can wait up to 10 s for a close handshake (a reader
        # cancelled mid-receive), and a cut must not hold up the test or the next cut.
        async def close_upstream() -> None:
            if upstream_close_delay:
                # ComfyUI keeps the dead client's socket for a while; meanwhile nothing reads it.
                await asyncio.sleep(upstream_close_delay)
                self._note(f"websocket #{id(pair) % 10000}: ComfyUI's side closed now")
            try:
                await asyncio.wait_for(pair.upstream.close(), timeout=2)
            except (TimeoutError, aiohttp.ClientError, OSError):
                pass

        task = asyncio.get_running_loop().create_task(close_upstream())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


def _json_field(body: bytes, name: str) -> str | None:
    try:
        value = json.loads(body or b"{}").get(name)
    except (ValueError, AttributeError):
        return None
    return str(value) if value is not None else None


# --- what ComfyUI itself holds --------------------------------------------------------------------


def comfy_history(url: str) -> dict[str, Any]:
    return requests.get(f"{url}/history", timeout=10).json()


def comfy_queue_ids(url: str) -> list[str]:
    queue = requests.get(f"{url}/queue", timeout=10).json()
    return [str(item[1]) for key in ("queue_running", "queue_pending") for item in queue[key]]


def sim_submissions(url: str) -> list[dict[str, Any]] | None:
    """The simulator's own log of `POST /prompt`, when it has one (`GET /sim/submissions`)."""
    try:
        response = requests.get(f"{url}/sim/submissions", timeout=5)
        if response.status_code != 200:
            return None
        body = response.json()
    except (requests.RequestException, ValueError):
        return None
    return body if isinstance(body, list) else None


def history_messages(entry: dict[str, Any]) -> list[str]:
    return [name for name, _ in (entry.get("status") or {}).get("messages", [])]


# --- processes ------------------------------------------------------------------------------------


class BeatProcess:
    """`celery beat` with its own schedule file: it sends jobs.tasks.sweep_jobs every SWEEP_SECONDS."""

    def __init__(self, *, env: dict[str, str], log_path: Path, schedule_path: Path) -> None:
        argv = [sys.executable, "-m", "celery", "-A", "anime_production", "beat", "--loglevel", "INFO"]
        argv += ["-s", str(schedule_path), "--max-interval", "1"]
        self.process = Process(argv, env=env, log_path=log_path, name="celery beat")

    def start(self) -> None:
        self.process.start().wait_for_line("beat: Starting", timeout=60)

    def stop(self) -> None:
        self.process.stop(grace=10)


class PrivateRedis:
    """A redis-server of our own (never the shared one): no RDB, no AOF, so a restart loses all."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.restarts = 0
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--daemonize", "no", "--protected-mode", "no", "--dir", str(log_path.parent)]
        self.process = Process(argv, log_path=log_path, name="redis-server")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process.start().wait_for_line("Ready to accept connections", timeout=20)

    def kill(self) -> None:
        self.process.kill()

    def restart(self, down_seconds: float = 0.0) -> None:
        self.kill()
        time.sleep(down_seconds)
        self.start()
        self.restarts += 1

    def stop(self) -> None:
        self.kill()


# --- the matrix -----------------------------------------------------------------------------------


@dataclass
class JobOutcome:
    job_id: str
    status: str
    category: str
    prompts: int  # distinct prompt ids the job sent to ComfyUI
    duplicated: int  # extra POSTs of one prompt_id + extra executions of the job in ComfyUI


@dataclass
class ScenarioRow:
    runs: int = 0
    passed: int = 0
    jobs: int = 0
    statuses: Counter = field(default_factory=Counter)
    lost: int = 0
    duplicated: int = 0
    prompts: int = 0
    notes: list[str] = field(default_factory=list)


class FaultMatrix:
    """Per scenario: runs, jobs, completed, failed, lost (not final at the end), duplicated prompts."""

    def __init__(self) -> None:
        self.rows: dict[str, ScenarioRow] = {}

    def row(self, scenario: str) -> ScenarioRow:
        return self.rows.setdefault(scenario, ScenarioRow())

    def run_started(self, scenario: str) -> None:
        self.row(scenario).runs += 1

    def run_passed(self, scenario: str) -> None:
        self.row(scenario).passed += 1

    def add_jobs(self, scenario: str, outcomes: list[JobOutcome]) -> None:
        row = self.row(scenario)
        for outcome in outcomes:
            row.jobs += 1
            row.statuses[outcome.status] += 1
            row.prompts += outcome.prompts
            row.duplicated += outcome.duplicated
            if outcome.status not in ("completed", "failed", "cancelled"):
                row.lost += 1

    def note(self, scenario: str, text: str) -> None:
        if text not in self.row(scenario).notes:
            self.row(scenario).notes.append(text)

    def table(self) -> str:
        header = ("scenario", "runs", "passed", "jobs", "completed", "failed", "lost", "prompts", "duplicated")
        lines = [header]
        for name, row in self.rows.items():
            lines.append(
                (
                    name,
                    str(row.runs),
                    str(row.passed),
                    str(row.jobs),
                    str(row.statuses["completed"]),
                    str(row.statuses["failed"]),
                    str(row.lost),
                    str(row.prompts),
                    str(row.duplicated),
                )
            )
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        out = []
        for index, line in enumerate(lines):
            out.append("| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)) + " |")
            if index == 0:
                out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        notes = [f"- {name}: {note}" for name, row in self.rows.items() for note in row.notes]
        legend = (
            "lost = a job not in a final state when its scenario ended; prompts = distinct ComfyUI prompts "
            "the jobs submitted; duplicated = POSTs of an already-submitted prompt_id plus executions of a "
            "job beyond the one that counts (a second prompt of the same job that also ran)."
        )
        return "\n".join([*out, "", legend, *(["", "Notes:", *notes] if notes else [])]) + "\n"

    def write(self, path: Path, backend: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"Fault-injection matrix (database: {backend})\n\n{self.table()}")
