"""The front door's HTTP answers against what ComfyUI itself answered (tests/data/comfyui-traces): the
recorded requests replayed through /comfy/ with the simulator as the fleet, and each answer's shape
(keys, list lengths, message kinds and the fields each carries) compared with ComfyUI's.

Differences by design, checked here as such: a body that is not JSON is a 400 with the reason (ComfyUI:
a 500 with a text body); filenames and subfolders are the project's names (the job's id as subfolder)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from comfy_api.models import FrontDoorPrompt
from jobs.models import Job, JobStatus, NodeTiming
from tests.factories import UserFactory, api_key_for
from tests.media_files import png
from tests.unit.test_comfy_front_door import finish

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("front_door_fleet")]

TRACES = Path(__file__).resolve().parents[1] / "data" / "comfyui-traces"


def exchanges(trace: str, method: str, path_start: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in (TRACES / trace).read_text().splitlines() if line.strip()]
    return [r for r in records if r["kind"] == "http" and r["method"] == method and r["path"].startswith(path_start)]


def shape(value: Any) -> Any:
    """What a client relies on: a dict's keys (and their values' shapes), a list's items' shapes,
    a scalar's type (an int where ComfyUI had a float is the same number to JSON)."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


@pytest.fixture
def comfy() -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=api_key_for(UserFactory.create()))
    return client


def replayed(client: APIClient, request: Any) -> Any:
    body = "" if request is None else json.dumps(request)
    return client.generic("POST", "/comfy/prompt", body, content_type="")


@pytest.mark.parametrize("trace", ["validation_error.jsonl", "missing_model.jsonl"])
def test_refused_prompts_answer_as_comfyui_did(comfy, trace):
    for recorded in exchanges(trace, "POST", "/prompt"):
        answer = replayed(comfy, recorded["request"])
        if recorded["status"] == 500:  # no body: ComfyUI's unhandled error, a 400 with the reason here
            assert answer.status_code == 400 and answer.json()["error"]["type"] == "no_prompt"
            continue
        assert answer.status_code == recorded["status"]
        ours, theirs = answer.json(), recorded["response"]
        assert ours["error"] == theirs["error"]
        assert set(ours["node_errors"]) == set(theirs["node_errors"])
        for node_id, expected in theirs["node_errors"].items():
            got = ours["node_errors"][node_id]
            assert got["class_type"] == expected["class_type"]
            assert got["dependent_outputs"] == expected["dependent_outputs"]
            for mine, comfyui in zip(got["errors"], expected["errors"], strict=True):
                assert (mine["type"], mine["message"]) == (comfyui["type"], comfyui["message"])
                assert set(mine["extra_info"]) == set(comfyui["extra_info"])
                # The fleet's own choices and config are listed; the input and value named are ComfyUI's.
                assert mine["details"].split(" not in ")[0] == comfyui["details"].split(" not in ")[0]
    assert Job.objects.count() == 0


def test_an_accepted_prompt_and_its_history_have_comfyuis_shape(comfy):
    [posted] = exchanges("success.jsonl", "POST", "/prompt")
    answer = replayed(comfy, posted["request"])
    assert answer.status_code == 200 and shape(answer.json()) == shape(posted["response"])
    prompt_id = answer.json()["prompt_id"]
    finish(prompt_id, image=png(8, 8))
    [recorded] = exchanges("success.jsonl", "GET", "/history/")
    ours = comfy.get(f"/comfy/history/{prompt_id}").json()[prompt_id]
    theirs = next(iter(recorded["response"].values()))
    assert shape(ours) == shape(theirs)
    assert ours["prompt"][2] == theirs["prompt"][2]  # the prompt as the client sent it
    assert ours["prompt"][4] == theirs["prompt"][4] and ours["meta"] == theirs["meta"]


def test_the_queue_has_comfyuis_shape(comfy):
    posts = exchanges("queue.jsonl", "POST", "/prompt")
    ids = [replayed(comfy, post["request"]).json()["prompt_id"] for post in posts]
    Job.objects.filter(front_door__prompt_id=ids[0]).update(
        status=JobStatus.RUNNING, backend="default", started_at=timezone.now()
    )
    [recorded] = [r for r in exchanges("queue.jsonl", "GET", "/queue") if r["path"] == "/queue"]
    ours = comfy.get("/comfy/queue").json()
    assert shape(ours) == shape(recorded["response"])
    assert [item[1] for item in ours["queue_pending"]] == ids[1:]


def test_an_interrupted_prompt_is_an_error_entry_as_comfyui_keeps_it(comfy):
    [posted] = exchanges("interrupt.jsonl", "POST", "/prompt")
    prompt_id = replayed(comfy, posted["request"]).json()["prompt_id"]
    job = FrontDoorPrompt.objects.get(prompt_id=prompt_id).job
    Job.objects.filter(pk=job.pk).update(current_node_id="2", current_node_class="TestSleep")
    now = timezone.now()
    NodeTiming.objects.create(
        job=job, node_id="1", class_type="EmptyImage", backend="default", started_at=now, finished_at=now, duration=0
    )
    finish(prompt_id, status=JobStatus.CANCELLED)
    [recorded] = exchanges("interrupt.jsonl", "GET", "/history/")
    ours = comfy.get(f"/comfy/history/{prompt_id}").json()[prompt_id]
    theirs = next(iter(recorded["response"].values()))
    assert shape(ours["status"]) == shape(theirs["status"])
    assert ours["outputs"] == theirs["outputs"] == {}
    kind, data = ours["status"]["messages"][-1]
    assert kind == "execution_interrupted" and data["node_id"] == "2" and data["node_type"] == "TestSleep"
    assert data["executed"] == ["1"]
