"""The front door's websocket for real: daphne, a Celery GPU worker and the ComfyUI simulator, each a
process (tests/system.py). A client does what ComfyUI's script_examples/websockets_api_example.py does
(open `/ws?clientId=`, POST /prompt with that client_id, read until `executing` with node null, then
/history and /view), with only the base URL and the API key header changed, and hears ComfyUI's own
messages in ComfyUI's order, previews included as ComfyUI's binary frames."""

from __future__ import annotations

import asyncio
import json
import struct
import time
import uuid
from typing import Any

import pytest
import requests
import websocket
from comfy_api_simplified import ComfyApiWrapper

from comfy_api.models import FrontDoorPrompt
from jobs.models import JobStatus
from tests.factories import UserFactory, api_key_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def preview_prompt(steps: int = 6, seconds_per_step: float = 0.35) -> dict[str, Any]:
    colour = time.monotonic_ns() % 100_000  # this run's own: never served from ComfyUI's cache
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 24, "batch_size": 1, "color": colour}},
        "2": {
            "class_type": "ProbePreviewSampler",
            "inputs": {"image": ["1", 0], "steps": steps, "seconds_per_step": seconds_per_step},
        },
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "ws_live"}},
    }


def frames_until_end(ws: websocket.WebSocket, prompt_id: str, timeout: float = 90) -> list[Any]:
    """Every frame (text decoded, binary as bytes) until the prompt's `executing` with node null."""
    frames: list[Any] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = ws.recv()
        if isinstance(frame, bytes):
            frames.append(frame)
            continue
        message = json.loads(frame)
        frames.append(message)
        data = message.get("data") or {}
        if message["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
            return frames
    raise AssertionError(f"no end within {timeout}s: {[f if isinstance(f, dict) else 'binary' for f in frames]}")


def test_a_websocket_client_follows_its_prompt_to_the_end_with_previews(live: Any, web_server: str) -> None:
    key = api_key_for(UserFactory.create())
    client_id = str(uuid.uuid4())
    ws = websocket.WebSocket()
    ws.connect(
        f"{web_server.replace('http://', 'ws://')}/comfy/ws?clientId={client_id}",
        header=[f"X-API-Key: {key}"],
        origin=web_server,
        timeout=30,
    )
    try:
        first = json.loads(ws.recv())
        prompt_id = str(uuid.uuid4())
        answer = requests.post(
            f"{web_server}/comfy/prompt",
            json={"prompt": preview_prompt(), "client_id": client_id, "prompt_id": prompt_id},
            headers={"X-API-Key": key},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        frames = frames_until_end(ws, prompt_id)
    finally:
        ws.close()

    assert first == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": client_id}}
    texts = [f for f in frames if isinstance(f, dict)]
    told = [m for m in texts if m["type"] != "status"]
    # ComfyUI's order, with the client's node ids and its own prompt id.
    executing = [m["data"]["node"] for m in told if m["type"] == "executing"]
    assert executing == ["1", "2", "3", None]
    kinds = [m["type"] for m in told]
    assert kinds[:2] == ["execution_start", "execution_cached"]
    assert kinds[-2:] == ["execution_success", "executing"]
    assert kinds.index("executed") < kinds.index("execution_success")
    assert {m["data"]["prompt_id"] for m in told} == {prompt_id}
    assert texts[-2]["type"] == "status" and texts[-2]["data"]["status"]["exec_info"]["queue_remaining"] == 0
    # The sampler's steps as it reported them (coalesced), on its own node, never past its last.
    steps = [(m["data"]["node"], m["data"]["value"], m["data"]["max"]) for m in told if m["type"] == "progress"]
    assert steps and {node for node, _, _ in steps} == {"2"} and all(0 < v <= 6 and m == 6 for _, v, m in steps)
    assert [v for _, v, _ in steps] == sorted(v for _, v, _ in steps)
    # Previews as ComfyUI's binary frames: type 1 (PREVIEW_IMAGE), image type 1 (JPEG), the JPEG itself,
    # while node 2 ran (after its `executing`, before node 3's).
    previews = [i for i, f in enumerate(frames) if isinstance(f, bytes)]
    assert previews, "a preview frame while the sampler ran"
    for index in previews:
        assert struct.unpack(">II", frames[index][:8]) == (1, 1) and frames[index][8:11] == b"\xff\xd8\xff"
    start_2 = next(
        i for i, f in enumerate(frames) if isinstance(f, dict) and f["type"] == "executing" and f["data"]["node"] == "2"
    )
    start_3 = next(
        i for i, f in enumerate(frames) if isinstance(f, dict) and f["type"] == "executing" and f["data"]["node"] == "3"
    )
    assert all(start_2 < index < start_3 for index in previews)

    # What `executed` named is what /history lists and /view serves: the job's stored output.
    executed = next(m["data"] for m in told if m["type"] == "executed")
    assert executed["node"] == "3"
    history = requests.get(f"{web_server}/comfy/history/{prompt_id}", headers={"X-API-Key": key}, timeout=30).json()
    assert history[prompt_id]["outputs"]["3"] == executed["output"]
    [image] = executed["output"]["images"]
    served = requests.get(f"{web_server}/comfy/view", params=image, headers={"X-API-Key": key}, timeout=30)
    job = FrontDoorPrompt.objects.get(prompt_id=prompt_id).job
    assert job.status == JobStatus.COMPLETED
    assert served.status_code == 200 and served.content == job.outputs.get().file.read()


def test_another_users_socket_with_the_same_client_id_hears_only_its_own_queue(live: Any, web_server: str) -> None:
    owner_key, other_key = api_key_for(UserFactory.create()), api_key_for(UserFactory.create())
    client_id = str(uuid.uuid4())
    base = web_server.replace("http://", "ws://")
    mine, theirs = websocket.WebSocket(), websocket.WebSocket()
    mine.connect(
        f"{base}/comfy/ws?clientId={client_id}", header=[f"X-API-Key: {owner_key}"], origin=web_server, timeout=30
    )
    theirs.connect(
        f"{base}/comfy/ws?clientId={client_id}", header=[f"X-API-Key: {other_key}"], origin=web_server, timeout=30
    )
    try:
        mine.recv(), theirs.recv()
        prompt_id = str(uuid.uuid4())
        answer = requests.post(
            f"{web_server}/comfy/prompt",
            json={
                "prompt": preview_prompt(steps=2, seconds_per_step=0.05),
                "client_id": client_id,
                "prompt_id": prompt_id,
            },
            headers={"X-API-Key": owner_key},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        frames_until_end(mine, prompt_id)
        theirs.settimeout(1.0)
        heard: list[Any] = []
        try:
            while True:
                heard.append(theirs.recv())
        except websocket.WebSocketTimeoutException:
            pass
    finally:
        mine.close()
        theirs.close()
    assert heard == [], heard


def test_comfy_api_simplified_waits_on_the_websocket_for_its_prompt(live: Any, web_server: str) -> None:
    """comfy-api-simplified (PyPI) unchanged: the key as its Basic password, which its `websockets`
    connection sends too (no Origin header), at `/ws` on the site's root (it joins an absolute path)."""
    key = api_key_for(UserFactory.create())
    api = ComfyApiWrapper(url=web_server, user="artist", password=key)
    prompt_id, previews = asyncio.run(api.queue_prompt_and_wait(preview_prompt(steps=4, seconds_per_step=0.4)))
    job = FrontDoorPrompt.objects.get(prompt_id=prompt_id).job
    assert job.status == JobStatus.COMPLETED
    # It keeps each binary frame's image: the sampler's previews, told while it ran.
    assert previews and all(image.startswith(b"\xff\xd8\xff") for image in previews)
