"""The simulator's aiohttp application: ComfyUI's HTTP routes and websocket, on one event loop.

Routes, status codes and bodies follow ComfyUI 0.8.0's server.py (see tests/data/comfyui-traces);
every route is also served under `/api`, as ComfyUI does. The prompt worker and the websocket
publisher run as tasks of the same loop; nothing here blocks it.

`/sim/...` routes are the simulator's own, for tests (real ComfyUI answers them with 404, so
product code must never call them): `GET /sim/submissions` lists every `POST /prompt` received;
`GET /sim/sent[?prompt_id=]` lists when each `progress` message went out (with --record-sends);
`GET /sim/uploads` lists every `POST /upload/image|mask` (asked and answered names, duplicate or not);
`GET /sim/input_reads[?prompt_id=]` lists every file a loader (LoadImage, LoadImageMask) read.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web
from PIL import Image

from .device import DeviceMemory, system_stats
from .execution import PromptExecutor, prompt_worker
from .job_listing import ALL_STATUSES, find_job, list_jobs
from .node_registry import NodeRegistry
from .options import SimulatorOptions
from .output_files import annotated_filepath, directory_for_type
from .prompt_queue import PromptQueue
from .sockets import SERVER_FEATURE_FLAGS, SocketHub
from .uploads import image_upload, mask_saver
from .validation import validate_prompt

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# extra_data keys ComfyUI keeps out of /queue and /history (API tokens for its partner nodes).
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
MAX_UPLOAD_SIZE = 100 * 1024 * 1024


class PromptServer:
    def __init__(self, options: SimulatorOptions) -> None:
        self.options = options
        self.hub = SocketHub(record_sends=options.record_sends)
        self.registry = NodeRegistry(options)
        self.device = DeviceMemory(options.vram_total_gb)
        self.queue = PromptQueue(on_change=self.queue_updated)
        self.executor = PromptExecutor(self.registry, self.hub, options, self.device)
        self.number = 0
        # Every POST /prompt with a prompt, accepted or not: lets tests count submissions, which
        # ComfyUI itself cannot tell (it accepts a resubmitted prompt_id as a new prompt).
        self.submissions: list[dict[str, Any]] = []
        # Every upload to the input (or another) folder, and every file a loader read from it.
        self.uploads: list[dict[str, Any]] = []
        self._tasks: list[asyncio.Task[None]] = []

    def queue_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": self.queue.tasks_remaining()}}

    def queue_updated(self) -> None:
        self.hub.send_sync("status", {"status": self.queue_info()})

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("GET", "/ws", self.websocket),
            ("GET", "/", self.index),
            ("GET", "/prompt", self.get_prompt),
            ("POST", "/prompt", self.post_prompt),
            ("GET", "/queue", self.get_queue),
            ("POST", "/queue", self.post_queue),
            ("GET", "/history", self.get_history),
            ("GET", "/history/{prompt_id}", self.get_history_item),
            ("POST", "/history", self.post_history),
            ("POST", "/interrupt", self.post_interrupt),
            ("POST", "/free", self.post_free),
            ("GET", "/object_info", self.get_object_info),
            ("GET", "/object_info/{node_class}", self.get_object_info_node),
            ("GET", "/view", self.view),
            ("POST", "/upload/image", self.upload_image),
            ("POST", "/upload/mask", self.upload_mask),
            ("GET", "/system_stats", self.get_system_stats),
            ("GET", "/features", self.get_features),
            ("GET", "/embeddings", self.get_embeddings),
            ("GET", "/models", self.get_model_types),
            ("GET", "/models/{folder}", self.get_models),
            ("GET", "/api/jobs", self.get_jobs),
            ("GET", "/api/jobs/{job_id}", self.get_job),
        ]

    def simulator_routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("GET", "/sim/submissions", self.get_submissions),
            ("GET", "/sim/sent", self.get_sent),
            ("GET", "/sim/uploads", self.get_uploads),
            ("GET", "/sim/input_reads", self.get_input_reads),
        ]

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, app: web.Application) -> None:
        self._tasks = [
            asyncio.create_task(self.hub.publish_forever()),
            asyncio.create_task(prompt_worker(self.queue, self.executor, self.hub)),
        ]

    async def shutdown(self, app: web.Application) -> None:
        await self.hub.close_all()

    async def cleanup(self, app: web.Application) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- websocket ---------------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.rel_url.query.get("clientId", "")
        if sid:
            # ComfyUI keeps one socket per clientId: the newest connection wins.
            self.hub.sockets.pop(sid, None)
        else:
            sid = uuid.uuid4().hex
        self.hub.sockets[sid] = ws
        self.hub.feature_flags[sid] = {}
        try:
            await self.hub.send("status", {"status": self.queue_info(), "sid": sid}, sid)
            # A client reconnecting mid-run is told the node being executed, without prompt_id.
            if self.hub.client_id == sid and self.hub.last_node_id is not None:
                await self.hub.send("executing", {"node": self.hub.last_node_id}, sid)
            await self._read_client_messages(ws, sid)
        finally:
            # As in ComfyUI this drops whatever socket holds the id now, even a newer one.
            self.hub.sockets.pop(sid, None)
            self.hub.feature_flags.pop(sid, None)
        return ws

    async def _read_client_messages(self, ws: web.WebSocketResponse, sid: str) -> None:
        first_message = True
        async for message in ws:
            if message.type == WSMsgType.ERROR:
                logger.warning("ws connection closed with exception %s", ws.exception())
            elif message.type == WSMsgType.TEXT:
                try:
                    data = json.loads(message.data)
                    # Only a client's first message can negotiate feature flags.
                    if first_message and data.get("type") == "feature_flags":
                        self.hub.feature_flags[sid] = data.get("data", {})
                        await self.hub.send("feature_flags", SERVER_FEATURE_FLAGS, sid)
                    first_message = False
                except json.JSONDecodeError:
                    logger.warning("Invalid JSON received from client %s: %s", sid, message.data)
                except Exception as error:
                    logger.error("Error processing WebSocket message: %s", error)

    # --- prompts, queue, history ------------------------------------------------------------

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(text="<html><body>ComfyUI simulator</body></html>", content_type="text/html")

    async def get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(self.queue_info())

    async def post_prompt(self, request: web.Request) -> web.Response:
        logger.info("got prompt")
        # A body that is not JSON raises here and aiohttp answers 500, exactly like ComfyUI.
        json_data = await request.json()
        if "number" in json_data:
            number: float = float(json_data["number"])
        else:
            number = -self.number if json_data.get("front") else self.number
            self.number += 1
        if "prompt" not in json_data:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return web.json_response({"error": error, "node_errors": {}}, status=400)

        prompt = json_data["prompt"]
        prompt_id = str(json_data.get("prompt_id", uuid.uuid4()))
        result = validate_prompt(self.registry, prompt, json_data.get("partial_execution_targets"))
        extra_data = json_data.get("extra_data", {})
        if "client_id" in json_data:
            extra_data["client_id"] = json_data["client_id"]
        self._record_submission(prompt_id, number, extra_data.get("client_id"), result.ok)
        if not result.ok:
            logger.warning("invalid prompt: %s", result.error)
            return web.json_response({"error": result.error, "node_errors": result.node_errors}, status=400)
        sensitive = {key: extra_data.pop(key) for key in SENSITIVE_EXTRA_DATA_KEYS if key in extra_data}
        extra_data["create_time"] = int(time.time() * 1000)
        self.queue.put((number, prompt_id, prompt, extra_data, result.outputs, sensitive))
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": result.node_errors})

    def _record_submission(self, prompt_id: str, number: float, client_id: str | None, accepted: bool) -> None:
        self.submissions.append(
            {
                "prompt_id": prompt_id,
                "number": number,
                "client_id": client_id,
                "accepted": accepted,
                "received_at": int(time.time() * 1000),
            }
        )

    async def get_submissions(self, request: web.Request) -> web.Response:
        return web.json_response(self.submissions)

    async def get_uploads(self, request: web.Request) -> web.Response:
        return web.json_response(self.uploads)

    async def get_input_reads(self, request: web.Request) -> web.Response:
        prompt_id = request.rel_url.query.get("prompt_id")
        reads = self.executor.input_reads
        return web.json_response([entry for entry in reads if prompt_id in (None, entry["prompt_id"])])

    async def get_sent(self, request: web.Request) -> web.Response:
        sent = self.hub.sent_progress
        if sent is None:
            return web.json_response({"error": "start the simulator with --record-sends"}, status=404)
        prompt_id = request.rel_url.query.get("prompt_id")
        return web.json_response([entry for entry in sent if prompt_id in (None, entry["prompt_id"])])

    async def get_queue(self, request: web.Request) -> web.Response:
        running, pending = self.queue.current_queue()
        return web.json_response({"queue_running": running, "queue_pending": pending})

    async def post_queue(self, request: web.Request) -> web.Response:
        json_data = await request.json()
        if json_data.get("clear"):
            self.queue.wipe_queue()
        for prompt_id in json_data.get("delete", []):
            self.queue.delete_queue_item(prompt_id)
        return web.Response(status=200)

    async def get_history(self, request: web.Request) -> web.Response:
        query = request.rel_url.query
        max_items = int(query["max_items"]) if "max_items" in query else None
        offset = int(query["offset"]) if "offset" in query else -1
        return web.json_response(self.queue.get_history(max_items=max_items, offset=offset))

    async def get_history_item(self, request: web.Request) -> web.Response:
        return web.json_response(self.queue.get_history(prompt_id=request.match_info["prompt_id"]))

    async def post_history(self, request: web.Request) -> web.Response:
        json_data = await request.json()
        if json_data.get("clear"):
            self.queue.wipe_history()
        for prompt_id in json_data.get("delete", []):
            self.queue.delete_history_item(prompt_id)
        return web.Response(status=200)

    async def post_interrupt(self, request: web.Request) -> web.Response:
        try:
            json_data = await request.json()
        except json.JSONDecodeError:
            json_data = {}
        prompt_id = json_data.get("prompt_id")
        if not prompt_id:
            logger.info("Global interrupt (no prompt_id specified)")
            self.executor.interrupt()
        elif prompt_id in self.queue.running_prompt_ids():
            logger.info("Interrupting prompt %s", prompt_id)
            self.executor.interrupt()
        else:
            logger.info("Prompt %s is not currently running, skipping interrupt", prompt_id)
        return web.Response(status=200)

    async def post_free(self, request: web.Request) -> web.Response:
        json_data = await request.json()
        if json_data.get("unload_models") or json_data.get("free_memory"):
            self.device.unload_all()
        return web.Response(status=200)

    # --- node catalogue, files, system ------------------------------------------------------

    async def get_object_info(self, request: web.Request) -> web.Response:
        return web.json_response({name: self.registry.object_info(name) for name in self.registry})

    async def get_object_info_node(self, request: web.Request) -> web.Response:
        node_class = request.match_info["node_class"]
        out = {node_class: self.registry.object_info(node_class)} if node_class in self.registry else {}
        return web.json_response(out)

    async def view(self, request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        if "filename" not in query:
            return web.Response(status=404)
        filename, annotated_type = annotated_filepath(query["filename"])
        # ComfyUI's guard against reading arbitrary paths.
        if not filename or filename[0] == "/" or ".." in filename:
            return web.Response(status=400)
        requested_type: str = query.get("type", "output")
        folder = directory_for_type(self.options, annotated_type or requested_type)
        if folder is None:
            return web.Response(status=400)
        output_dir = str(folder)
        if "subfolder" in query:
            full_output_dir = os.path.join(output_dir, query["subfolder"])
            if os.path.commonpath((os.path.abspath(full_output_dir), output_dir)) != output_dir:
                return web.Response(status=403)
            output_dir = full_output_dir
        filename = os.path.basename(filename)
        file = os.path.join(output_dir, filename)
        if not os.path.isfile(file):
            return web.Response(status=404)
        if "preview" in query or query.get("channel", "rgba") != "rgba":
            return await asyncio.to_thread(_converted_image, file, filename, query)
        return web.FileResponse(file, headers={"Content-Disposition": f'filename="{filename}"'})

    async def upload_image(self, request: web.Request) -> web.Response:
        post = await request.post()
        return await asyncio.to_thread(image_upload, self.options, post, self.uploads)

    async def upload_mask(self, request: web.Request) -> web.Response:
        post = await request.post()
        return await asyncio.to_thread(image_upload, self.options, post, self.uploads, mask_saver(self.options))

    async def get_system_stats(self, request: web.Request) -> web.Response:
        return web.json_response(system_stats(self.device))

    async def get_features(self, request: web.Request) -> web.Response:
        return web.json_response(SERVER_FEATURE_FLAGS)

    async def get_embeddings(self, request: web.Request) -> web.Response:
        return web.json_response([])

    async def get_model_types(self, request: web.Request) -> web.Response:
        return web.json_response(["checkpoints", "loras", "vae", "embeddings", "upscale_models"])

    async def get_models(self, request: web.Request) -> web.Response:
        folder = request.match_info["folder"]
        if folder == "checkpoints":
            return web.json_response(list(self.options.models))
        if folder in ("loras", "vae", "embeddings", "upscale_models"):
            return web.json_response([])
        return web.Response(status=404)

    # --- /api/jobs --------------------------------------------------------------------------

    async def get_jobs(self, request: web.Request) -> web.Response:
        query = request.rel_url.query
        status_filter = None
        if query.get("status"):
            status_filter = [s.strip().lower() for s in query["status"].split(",") if s.strip()]
            invalid = [s for s in status_filter if s not in ALL_STATUSES]
            if invalid:
                message = f"Invalid status value(s): {', '.join(invalid)}. Valid values: {', '.join(ALL_STATUSES)}"
                return web.json_response({"error": message}, status=400)
        sort_by = query.get("sort_by", "created_at").lower()
        if sort_by not in ("created_at", "execution_duration"):
            return web.json_response({"error": "sort_by must be 'created_at' or 'execution_duration'"}, status=400)
        sort_order = query.get("sort_order", "desc").lower()
        if sort_order not in ("asc", "desc"):
            return web.json_response({"error": "sort_order must be 'asc' or 'desc'"}, status=400)
        limit: int | None = None
        if "limit" in query:
            try:
                limit = int(query["limit"])
            except ValueError:
                return web.json_response({"error": "limit must be an integer"}, status=400)
            if limit <= 0:
                return web.json_response({"error": "limit must be a positive integer"}, status=400)
        try:
            offset = max(0, int(query.get("offset", 0)))
        except ValueError:
            return web.json_response({"error": "offset must be an integer"}, status=400)

        running, queued = self.queue.current_queue()
        jobs, total = list_jobs(
            running,
            queued,
            self.queue.get_history(),
            status_filter=status_filter,
            workflow_id=query.get("workflow_id"),
            sort_by=sort_by,
            sort_order=sort_order,
            limit=limit,
            offset=offset,
        )
        pagination = {"offset": offset, "limit": limit, "total": total, "has_more": offset + len(jobs) < total}
        return web.json_response({"jobs": jobs, "pagination": pagination})

    async def get_job(self, request: web.Request) -> web.Response:
        job_id = request.match_info["job_id"]
        running, queued = self.queue.current_queue()
        job = find_job(job_id, running, queued, self.queue.get_history(prompt_id=job_id))
        if job is None:
            return web.json_response({"error": "Job not found"}, status=404)
        return web.json_response(job)


def _converted_image(file: str, filename: str, query: Any) -> web.Response:
    """`/view?preview=webp;90` and `&channel=rgb|a`, as ComfyUI converts them."""
    with Image.open(file) as img:
        buffer = io.BytesIO()
        if "preview" in query:
            preview_info = query["preview"].split(";")
            image_format = preview_info[0]
            if image_format not in ("webp", "jpeg") or "a" in query.get("channel", ""):
                image_format = "webp"
            quality = int(preview_info[-1]) if preview_info[-1].isdigit() else 90
            converted = img.convert("RGB") if image_format == "jpeg" or query.get("channel") == "rgb" else img
            converted.save(buffer, format=image_format, quality=quality)
            return web.Response(
                body=buffer.getvalue(),
                content_type=f"image/{image_format}",
                headers={"Content-Disposition": f'filename="{filename.replace("png", image_format)}"'},
            )
        if query.get("channel") == "rgb":
            img.convert("RGB").save(buffer, format="PNG")
        else:
            alpha = img.getchannel("A") if img.mode == "RGBA" else Image.new("L", img.size, 255)
            alpha_image = Image.new("RGBA", img.size)
            alpha_image.putalpha(alpha)
            alpha_image.save(buffer, format="PNG")
        return web.Response(
            body=buffer.getvalue(), content_type="image/png", headers={"Content-Disposition": f'filename="{filename}"'}
        )


PROMPT_SERVER = web.AppKey("prompt_server", PromptServer)


def build_app(options: SimulatorOptions) -> web.Application:
    server = PromptServer(options)
    app = web.Application(client_max_size=MAX_UPLOAD_SIZE)
    routes = server.routes()
    # ComfyUI serves every route both as is and under /api.
    app.add_routes([web.route(method, "/api" + path, handler) for method, path, handler in routes])
    app.add_routes([web.route(method, path, handler) for method, path, handler in routes])
    app.add_routes([web.route(method, path, handler) for method, path, handler in server.simulator_routes()])
    app.on_startup.append(server.start)
    app.on_shutdown.append(server.shutdown)
    app.on_cleanup.append(server.cleanup)
    app[PROMPT_SERVER] = server
    return app


def run(options: SimulatorOptions) -> None:
    """Serve until interrupted (SIGINT/SIGTERM)."""
    logging.basicConfig(level=options.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options.output_dir.mkdir(parents=True, exist_ok=True)
    options.input_dir.mkdir(parents=True, exist_ok=True)  # ComfyUI makes its input folder at start
    logger.info("ComfyUI simulator, output directory %s", options.output_dir)
    logger.info("To see the GUI go to: http://%s:%d", options.host, options.port)
    web.run_app(
        build_app(options),
        host=options.host,
        port=options.port,
        print=None,
        shutdown_timeout=2.0,
        access_log=None,
    )
