"""A ComfyUI that answers whatever a test tells it to: the hostile GPU machine of issue 11.

An aiohttp application on a thread of the test process (like devtools/simulator_process.py's
InProcessSimulator), reachable over loopback by the tracker in this process or by a Celery worker
process. It speaks just enough of ComfyUI's protocol for a tracker to find a prompt and end it:

- GET /queue: empty (the prompt already finished), GET /history/<id>: `entry` for any prompt id
  (or `{}` when None), GET /object_info: `{}`, a websocket at /ws that says hello and stays quiet;
- GET /view: the bytes in `files` (or chunks from a callable, to stream), a redirect for the names
  in `redirects`, 404 otherwise; every /view asked for is recorded in `views`;
- POST /prompt: `rejection` as a 400 answer when set (ComfyUI's node_errors), else accepted.

Everything is JSON-encoded as ComfyUI would: a NUL in a Python string goes out as `\\u0000`.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

# A /view body: bytes, or a function returning an async iterator of chunks (to stream large files).
ViewBody = bytes | Callable[[], AsyncIterator[bytes]]

HTML_WITH_SCRIPT = b"""<!doctype html><html><body><script>
document.cookie = "pwned=1; path=/";
localStorage.setItem("pwned", document.cookie);
fetch("/api/jobs/").then(r => r.text()).then(t => { document.title = "pwned " + t.length; });
</script></body></html>"""
SVG_WITH_SCRIPT = b"""<?xml version="1.0"?>
<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>
document.cookie = "pwned=1; path=/"; localStorage.setItem("pwned", "svg");
</script><rect width="10" height="10"/></svg>"""
PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


def history_entry(
    outputs: dict[str, Any] | None = None, *, status: str = "success", messages: list[Any] | None = None
) -> dict[str, Any]:
    """A /history entry in ComfyUI's shape."""
    return {
        "prompt": [],
        "outputs": outputs or {},
        "status": {"status_str": status, "completed": status == "success", "messages": messages or []},
    }


def image_outputs(node_id: str, filenames: list[str]) -> dict[str, Any]:
    return {node_id: {"images": [{"filename": name, "subfolder": "", "type": "output"} for name in filenames]}}


class HostileComfyUI:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.entry: Any = None
        self.files: dict[str, ViewBody] = {}
        self.any_file: bytes | None = None  # served for names not in `files`
        self.redirects: dict[str, str] = {}
        self.rejection: dict[str, Any] | None = None
        self.views: list[str] = []
        self.submitted: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- running ---------------------------------------------------------------------------------

    def start(self) -> HostileComfyUI:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="hostile-comfyui", daemon=True)
        self._thread.start()
        self._runner = asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop.close()
        self._loop = self._thread = self._runner = None

    async def _serve(self) -> Any:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/ws", self._ws)
        app.router.add_get("/queue", _answer({"queue_running": [], "queue_pending": []}))
        app.router.add_post("/queue", _answer({}))
        app.router.add_post("/interrupt", _answer({}))
        app.router.add_get("/object_info", _answer({}))
        app.router.add_get("/history/{prompt_id}", self._history)
        app.router.add_get("/view", self._view)
        app.router.add_post("/prompt", self._prompt)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self.port = int(runner.addresses[0][1])
        return runner

    # --- handlers --------------------------------------------------------------------------------

    async def _ws(self, request: Any) -> Any:
        from aiohttp import web

        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId", "anonymous")
        await ws.send_str(
            json.dumps({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": sid}})
        )
        async for _ in ws:
            pass  # the feature_flags message; nothing else to say
        return ws

    async def _history(self, request: Any) -> Any:
        prompt_id = request.match_info["prompt_id"]
        return _json({} if self.entry is None else {prompt_id: self.entry})

    async def _view(self, request: Any) -> Any:
        from aiohttp import web

        name = request.query.get("filename", "")
        self.views.append(name)
        if name in self.redirects:
            raise web.HTTPFound(self.redirects[name])
        body = self.files.get(name, self.any_file)
        if body is None:
            return web.Response(status=404, text="not found")
        if isinstance(body, bytes):
            # ComfyUI sends the type its name suggests: text/html for x.html.
            return web.Response(body=body, content_type=_type_by_name(name))
        response = web.StreamResponse(headers={"Content-Type": _type_by_name(name)})
        await response.prepare(request)
        async for chunk in body():
            await response.write(chunk)
        await response.write_eof()
        return response

    async def _prompt(self, request: Any) -> Any:
        payload = await request.json()
        if self.rejection is not None:
            return _json(self.rejection, status=400)
        prompt_id = str(payload.get("prompt_id"))
        self.submitted.append(prompt_id)
        return _json({"prompt_id": prompt_id, "number": 1, "node_errors": {}})


def _answer(body: Any) -> Callable[[Any], Any]:
    async def handler(request: Any) -> Any:
        return _json(body)

    return handler


def _json(body: Any, status: int = 200) -> Any:
    from aiohttp import web

    return web.Response(text=json.dumps(body), status=status, content_type="application/json")


def _type_by_name(name: str) -> str:
    import mimetypes

    return mimetypes.guess_type(name.replace("\x00", ""))[0] or "application/octet-stream"
