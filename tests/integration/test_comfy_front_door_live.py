"""ComfyUI clients nobody here wrote, run unchanged against the project (daphne, a Celery GPU worker, the
ComfyUI simulator: each a process, tests/system.py), with only the base URL and the API key changed:

- ComfyUI's own documented API usage (tests/comfyui_api_example.py: queue a prompt with its own
  prompt_id, read /history, fetch each image through /view), the key added by a urllib opener;
- comfy-api-simplified (PyPI), given the key as its `password` (it sends Basic credentials) and the
  site as its URL (it joins "/prompt" as an absolute path, so the front door answers at the root too);
- pycomfy (PyPI), the key in its base URL (`http://me:<key>@host/comfy`) and on its socket.

They follow a prompt over HTTP (polling /history), as ComfyUI's basic API example does, and over the
front door's websocket as its websocket example does.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket
from comfy_api_simplified import ComfyApiWrapper, ComfyWorkflowWrapper
from pycomfy import ComfyAPI

from comfy_api.models import FrontDoorPrompt
from jobs.models import Job, JobStatus
from tests import comfyui_api_example as example
from tests.conftest import wait_for
from tests.factories import UserFactory, api_key_for
from tests.media_files import png

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def sleep_prompt(seconds: float = 0.5, prefix: str = "front_door") -> dict[str, Any]:
    # A colour of this run's own, so ComfyUI's cache never serves this prompt from an earlier one.
    colour = time.monotonic_ns() % 100_000
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 24, "batch_size": 1, "color": colour}},
        "2": {"class_type": "TestSleep", "inputs": {"value": ["1", 0], "seconds": seconds}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


@pytest.fixture
def account(live: Any, web_server: str) -> tuple[str, str]:
    user = UserFactory.create()
    return web_server, api_key_for(user)


@pytest.fixture
def documented_example(account: tuple[str, str]) -> Iterator[Any]:
    url, key = account
    opener = urllib.request.build_opener()
    opener.addheaders = [*opener.addheaders, ("X-API-Key", key)]
    urllib.request.install_opener(opener)
    saved = example.server_address
    example.server_address = url.removeprefix("http://") + "/comfy"
    try:
        yield example
    finally:
        example.server_address = saved
        urllib.request.install_opener(urllib.request.build_opener())


def test_comfyuis_documented_api_usage_runs_a_prompt_and_fetches_its_image(documented_example: Any) -> None:
    prompt_id = str(uuid.uuid4())
    documented_example.queue_prompt(sleep_prompt(), prompt_id)
    history = wait_for(lambda: documented_example.get_history(prompt_id), timeout=60, message="the history entry")
    entry = history[prompt_id]
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    [image] = entry["outputs"]["3"]["images"]
    data = documented_example.get_image(image["filename"], image["subfolder"], image["type"])
    job = FrontDoorPrompt.objects.get(prompt_id=prompt_id).job
    assert job.status == JobStatus.COMPLETED and job.outputs.get().file.read() == data
    assert data.startswith(b"\x89PNG")
    # The prompt's node ids are the client's own in the job and in what the history shows.
    assert entry["prompt"][2] == job.workflow and set(job.workflow) == {"1", "2", "3"}


def test_comfyuis_documented_websocket_flow_follows_the_prompt_to_its_images(
    documented_example: Any, account: tuple[str, str]
) -> None:
    """The example's own get_images(): queue, read the socket until `executing` with node null for
    its prompt, then /history and /view. The socket is opened as the example opens it, plus the key."""
    _, key = account
    ws = websocket.WebSocket()
    address = documented_example.server_address
    ws.connect(f"ws://{address}/ws?clientId={documented_example.client_id}", header={"X-API-Key": key}, timeout=60)
    try:
        images = documented_example.get_images(ws, sleep_prompt(prefix="example_ws"))
    finally:
        ws.close()
    [data] = images["3"]
    assert data.startswith(b"\x89PNG")
    row = FrontDoorPrompt.objects.get(client_id=documented_example.client_id)
    assert row.job.status == JobStatus.COMPLETED and row.job.outputs.get().file.read() == data


def test_comfy_api_simplified_submits_follows_fetches_and_uploads(account: tuple[str, str], tmp_path: Path) -> None:
    url, key = account
    api = ComfyApiWrapper(url=url, user="artist", password=key)
    answer = api.queue_prompt(sleep_prompt(), client_id="simplified")
    prompt_id = answer["prompt_id"]
    entry = wait_for(lambda: api.get_history(prompt_id).get(prompt_id), timeout=60, message="the history entry")
    [image] = entry["outputs"]["3"]["images"]
    data = api.get_image(image["filename"], image["subfolder"], image["type"])
    assert (
        data.startswith(b"\x89PNG")
        and data == Job.objects.get(front_door__prompt_id=prompt_id).outputs.get().file.read()
    )

    picture = tmp_path / "keyframe.png"
    picture.write_bytes(png(40, 30, (time.monotonic_ns() % 256, 90, 20)))
    uploaded = api.upload_image(picture)
    assert uploaded == {"name": "keyframe.png", "subfolder": "default_upload_folder", "type": "input"}
    loaded = {
        "1": {"class_type": "LoadImage", "inputs": {"image": f"{uploaded['subfolder']}/{uploaded['name']}"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "from_upload"}},
    }
    second = api.queue_prompt(loaded)["prompt_id"]
    done = wait_for(lambda: api.get_history(second).get(second), timeout=60, message="the upload's prompt")
    assert done["status"]["status_str"] == "success", done["status"]
    job = Job.objects.get(front_door__prompt_id=second)
    assert job.workflow["1"]["inputs"]["image"].startswith("asset:")  # the caller's asset, not a GPU's file
    assert done["prompt"][2]["1"]["inputs"]["image"] == "default_upload_folder/keyframe.png"

    assert {"SaveImage", "LoadImage", "TestSleep"} <= set(api.get_object_info())
    assert set(api.get_object_info("SaveImage")) == {"SaveImage"}
    assert api.get_system_stats()["system"]["argv"] == []
    assert isinstance(api.get_embeddings(), list)


def test_comfy_api_simplified_runs_a_titled_workflow_file_to_its_images(
    account: tuple[str, str], tmp_path: Path
) -> None:
    """Its README's flow: a workflow file saved in API format, a node's input set by the node's title,
    queue_and_wait_images (POST /prompt, its websocket at the root's /ws with the key as Basic
    credentials until the prompt ends, /history, /view)."""
    url, key = account
    prompt = sleep_prompt(prefix="simplified_ws")
    for node_id, title in (("1", "Blank"), ("2", "Wait"), ("3", "Save Image")):
        prompt[node_id]["_meta"] = {"title": title}
    path = tmp_path / "workflow_api.json"
    path.write_text(json.dumps(prompt))
    flow = ComfyWorkflowWrapper(str(path))
    flow.set_node_param("Wait", "seconds", 0.4)
    api = ComfyApiWrapper(url=url, user="artist", password=key)
    images = api.queue_and_wait_images(flow, "Save Image")
    [(name, data)] = images.items()
    job = FrontDoorPrompt.objects.get().job  # this test's only prompt
    assert job.workflow["2"]["inputs"]["seconds"] == 0.4 and job.status == JobStatus.COMPLETED
    output = job.outputs.get()
    assert data == output.file.read() and data.startswith(b"\x89PNG")
    assert name == Path(output.file.name or "").name  # the project's name, as /history gave it


def test_pycomfy_executes_a_workflow_file_and_returns_its_image(account: tuple[str, str], tmp_path: Path) -> None:
    """pycomfy (PyPI) as its README uses it: load an API-format workflow file, set a node, execute,
    get PIL images. Its HTTP calls carry the key as Basic credentials from the base URL; its socket
    (websocket-client, which sends no credentials of a URL) is opened with the key header and handed
    to it, which its connect() accepts as already connected."""
    url, key = account
    host = url.removeprefix("http://")
    client = ComfyAPI(f"http://artist:{key}@{host}/comfy")
    client.ws = websocket.create_connection(
        f"ws://{host}/comfy/ws?clientId={client.session_id}", header={"X-API-Key": key}, timeout=60
    )
    path = tmp_path / "workflow_api.json"
    path.write_text(json.dumps(sleep_prompt(prefix="pycomfy")))
    try:
        flow = client.load_workflow(str(path))
        flow.set_node(flow.get_nodes_by_class("TestSleep")[0], {"seconds": 0.3})
        [image] = flow.execute()
    finally:
        client.close()
    assert image.size == (32, 24)
    row = FrontDoorPrompt.objects.get(client_id=client.session_id)
    assert row.job.status == JobStatus.COMPLETED and row.job.workflow["2"]["inputs"]["seconds"] == 0.3


def test_a_waiting_prompt_is_deleted_and_a_running_one_interrupted(account: tuple[str, str]) -> None:
    url, key = account
    api = ComfyApiWrapper(url=url, user="artist", password=key)
    running = api.queue_prompt(sleep_prompt(seconds=30))["prompt_id"]
    wait_for(
        lambda: [item[1] for item in api.get_queue()["queue_running"]] == [running],
        timeout=60,
        message="the first prompt running",
    )
    waiting = api.queue_prompt(sleep_prompt(seconds=30))["prompt_id"]
    assert api.get_queue_size_before(waiting) >= 1
    # ComfyUI's own way to take a prompt off the queue (comfy-api-simplified has no call for it).
    deleted = requests.post(f"{url}/comfy/queue", json={"delete": [waiting]}, headers={"X-API-Key": key}, timeout=10)
    assert deleted.status_code == 200
    assert Job.objects.get(front_door__prompt_id=waiting).status == JobStatus.CANCELLED
    assert waiting not in json.dumps(api.get_queue()) and api.get_history(waiting) == {}

    api.interrupt()
    entry = wait_for(lambda: api.get_history(running).get(running), timeout=60, message="the interrupted prompt")
    assert entry["status"]["status_str"] == "error"
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    assert Job.objects.get(front_door__prompt_id=running).status == JobStatus.CANCELLED


def test_another_users_key_sees_and_touches_nothing_of_it(account: tuple[str, str]) -> None:
    url, key = account
    mine = ComfyApiWrapper(url=url, user="artist", password=key)
    prompt_id = mine.queue_prompt(sleep_prompt())["prompt_id"]
    wait_for(lambda: mine.get_history(prompt_id).get(prompt_id), timeout=60, message="the history entry")
    other = ComfyApiWrapper(url=url, user="other", password=api_key_for(UserFactory.create()))
    assert other.get_history(prompt_id) == {} and other.get_queue() == {"queue_running": [], "queue_pending": []}
    image = mine.get_history(prompt_id)[prompt_id]["outputs"]["3"]["images"][0]
    refused = requests.get(
        f"{url}/comfy/view", params=image, headers={"X-API-Key": api_key_for(UserFactory.create())}, timeout=10
    )
    assert refused.status_code == 404
    assert requests.post(f"{url}/prompt", json={"prompt": sleep_prompt()}, timeout=10).status_code == 401
