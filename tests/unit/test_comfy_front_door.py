"""The ComfyUI front door's HTTP half (comfy_api): ComfyUI's endpoints and shapes, backed by jobs,
assets and storage, for the caller's own prompts. The fleet is the ComfyUI simulator."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone
from rest_framework.test import APIClient

from comfy_api.fleet_info import fleet_info_forget
from comfy_api.models import FrontDoorPrompt
from jobs.models import Job, JobOutput, JobStatus
from tests.factories import SLEEP_WORKFLOW, UserFactory, api_key_for, keyed_client
from tests.media_files import png

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("front_door_fleet")]


keyed = keyed_client


@pytest.fixture
def artist() -> Any:
    return UserFactory()


@pytest.fixture
def comfy(artist: Any) -> APIClient:
    return keyed(artist)


def workflow(**changes: Any) -> dict[str, Any]:
    graph = json.loads(json.dumps(SLEEP_WORKFLOW))
    for node_id, inputs in changes.items():
        graph[node_id]["inputs"].update(inputs)
    return graph


def post_json(client: APIClient, path: str, body: Any) -> Any:
    # As ComfyUI's clients post: JSON bytes, often with no Content-Type at all.
    return client.generic("POST", path, json.dumps(body), content_type="")


def submit(client: APIClient, prompt: dict[str, Any], **fields: Any) -> dict[str, Any]:
    response = post_json(client, "/comfy/prompt", {"prompt": prompt, "client_id": "c1", **fields})
    assert response.status_code == 200, response.content
    return response.json()


def finish(prompt_id: str, *, status: str = JobStatus.COMPLETED, image: bytes | None = None) -> Job:
    job = FrontDoorPrompt.objects.get(prompt_id=prompt_id).job
    now = timezone.now()
    Job.objects.filter(pk=job.pk).update(status=status, started_at=now, finished_at=now, backend="default")
    if image is not None:
        output = JobOutput(
            job=job, node_id="3", kind="images", comfy_filename="test_00001_.png", media_type="image/png"
        )
        output.file.save("x.png", ContentFile(image), save=False)
        output.save()
    job.refresh_from_db()
    return job


# --- POST /prompt --------------------------------------------------------------------------------


def test_a_prompt_becomes_a_job_of_the_caller_with_the_clients_node_ids(comfy, artist):
    answer = submit(comfy, workflow())
    assert set(answer) == {"prompt_id", "number", "node_errors"} and answer["node_errors"] == {}
    row = FrontDoorPrompt.objects.get(prompt_id=answer["prompt_id"])
    assert row.job.user == artist and row.number == answer["number"] and row.client_id == "c1"
    assert set(row.job.workflow) == {"1", "2", "3"} and row.outputs_to_execute == ["3"]
    listed = comfy.get("/api/jobs/").json()["results"]
    assert [job["id"] for job in listed] == [str(row.job.id)]  # visible in REST like any other job
    assert "comfyui-front-door" in row.job.tags


def test_numbers_increase_and_front_goes_first_at_a_higher_priority(comfy):
    first = submit(comfy, workflow())["number"]
    second = submit(comfy, workflow())["number"]
    front = submit(comfy, workflow(), front=True)
    assert second > first and front["number"] < first
    jobs = {row.prompt_id: row.job for row in FrontDoorPrompt.objects.all()}
    assert jobs[front["prompt_id"]].priority > jobs[FrontDoorPrompt.objects.get(number=first).prompt_id].priority


def test_refusals_have_comfyuis_shape(comfy):
    missing = post_json(comfy, "/comfy/prompt", {"client_id": "x"})
    assert missing.status_code == 400 and missing.json()["error"]["type"] == "no_prompt"
    empty = post_json(comfy, "/comfy/prompt", {"prompt": {}})
    assert empty.json() == {
        "error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {}},
        "node_errors": {},
    }
    unknown = post_json(
        comfy, "/comfy/prompt", {"prompt": {**workflow(), "9": {"class_type": "NoSuchNode", "inputs": {}}}}
    )
    assert unknown.status_code == 400
    assert unknown.json()["error"] == {
        "type": "invalid_prompt",
        "message": "Cannot execute because node NoSuchNode does not exist.",
        "details": "Node ID '#9'",
        "extra_info": {},
    }
    assert Job.objects.count() == 0


def test_a_missing_input_and_a_server_limit_are_node_errors_with_their_dependent_outputs(comfy, settings):
    graph = workflow()
    del graph["2"]["inputs"]["seconds"]
    body = post_json(comfy, "/comfy/prompt", {"prompt": graph}).json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["node_errors"]["2"]["errors"][0]["type"] == "required_input_missing"
    assert body["node_errors"]["2"]["dependent_outputs"] == ["3"]
    assert body["node_errors"]["2"]["class_type"] == "TestSleep"
    settings.WORKFLOW_MAX_PIXELS = 100
    refused = post_json(comfy, "/comfy/prompt", {"prompt": workflow()}).json()
    assert refused["error"]["type"] == "prompt_outputs_failed_validation"
    (node_id, entry), *_ = refused["node_errors"].items()
    assert entry["errors"][0]["type"] == "refused_by_server" and node_id in {"1", "2", "3"}
    assert Job.objects.count() == 0


def test_bounds_on_what_the_client_controls(comfy):
    for fields, word in (
        ({"client_id": "c" * 200}, "client_id"),
        ({"extra_data": {"big": "x" * (1024 * 1024 + 1)}}, "extra_data"),
        ({"prompt_id": "a/b"}, "prompt_id"),
        ({"number": "soon"}, "number"),
        ({"partial_execution_targets": ["3"]}, "partial_execution_targets"),
    ):
        response = post_json(comfy, "/comfy/prompt", {"prompt": workflow(), **fields})
        assert response.status_code == 400 and word in response.json()["error"]["message"]
    assert Job.objects.count() == 0
    assert comfy.get("/comfy/history?max_items=100000").status_code == 400
    assert comfy.get("/comfy/history?offset=x").status_code == 400


def test_a_chosen_prompt_id_is_used_and_a_retried_request_makes_no_second_job(comfy):
    answer = submit(comfy, workflow(), prompt_id="my-id-1")
    again = submit(comfy, workflow(), prompt_id="my-id-1")
    assert answer == again and answer["prompt_id"] == "my-id-1" and Job.objects.count() == 1
    other = post_json(comfy, "/comfy/prompt", {"prompt": workflow(**{"2": {"seconds": 2}}), "prompt_id": "my-id-1"})
    assert other.status_code == 400 and other.json()["error"]["type"] == "prompt_id_in_use"


# --- queue, history, interrupt: the caller's own -------------------------------------------------


def test_the_queue_lists_only_the_callers_prompts_in_comfyuis_shape(comfy):
    mine = submit(comfy, workflow())
    submit(keyed(UserFactory()), workflow())
    queue = comfy.get("/comfy/queue").json()
    assert queue["queue_running"] == []
    [item] = queue["queue_pending"]
    assert item[:2] == [mine["number"], mine["prompt_id"]]
    assert item[2] == workflow() and item[3]["client_id"] == "c1" and item[4] == ["3"]
    assert comfy.get("/comfy/prompt").json() == {"exec_info": {"queue_remaining": 1}}


def test_deleting_from_the_queue_cancels_the_callers_waiting_job_which_then_has_no_history(comfy):
    mine = submit(comfy, workflow())
    theirs = submit(keyed(UserFactory()), workflow())
    for ids in ([mine["prompt_id"], theirs["prompt_id"]],):
        assert post_json(comfy, "/comfy/queue", {"delete": ids}).status_code == 200
    statuses = {row.prompt_id: row.job.status for row in FrontDoorPrompt.objects.select_related("job")}
    assert statuses == {mine["prompt_id"]: JobStatus.CANCELLED, theirs["prompt_id"]: JobStatus.QUEUED}
    assert comfy.get(f"/comfy/history/{mine['prompt_id']}").json() == {}
    assert comfy.get("/comfy/queue").json()["queue_pending"] == []


def test_clearing_the_queue_leaves_running_jobs_and_other_users_alone(comfy):
    waiting = submit(comfy, workflow())
    running = submit(comfy, workflow())
    Job.objects.filter(front_door__prompt_id=running["prompt_id"]).update(status=JobStatus.RUNNING, backend="default")
    theirs = submit(keyed(UserFactory()), workflow())
    assert post_json(comfy, "/comfy/queue", {"clear": True}).status_code == 200
    status = {row.prompt_id: row.job.status for row in FrontDoorPrompt.objects.select_related("job")}
    assert status[waiting["prompt_id"]] == JobStatus.CANCELLED
    assert status[running["prompt_id"]] == JobStatus.RUNNING and status[theirs["prompt_id"]] == JobStatus.QUEUED
    assert [item[1] for item in comfy.get("/comfy/queue").json()["queue_running"]] == [running["prompt_id"]]


def test_interrupt_asks_to_cancel_only_the_callers_running_job(comfy):
    mine = submit(comfy, workflow())
    theirs = submit(keyed(UserFactory()), workflow())
    Job.objects.update(status=JobStatus.RUNNING, backend="default")
    assert post_json(comfy, "/comfy/interrupt", {}).status_code == 200
    jobs = {row.prompt_id: row.job for row in FrontDoorPrompt.objects.select_related("job")}
    assert jobs[mine["prompt_id"]].cancel_requested_at is not None
    assert jobs[theirs["prompt_id"]].cancel_requested_at is None
    assert post_json(comfy, "/comfy/interrupt", {"prompt_id": theirs["prompt_id"]}).status_code == 200
    assert Job.objects.get(front_door__prompt_id=theirs["prompt_id"]).cancel_requested_at is None


def test_history_has_comfyuis_shape_and_view_serves_the_output_to_its_owner_only(comfy):
    answer = submit(comfy, workflow())
    image = png(16, 16)
    job = finish(answer["prompt_id"], image=image)
    history = comfy.get(f"/comfy/history/{answer['prompt_id']}").json()
    entry = history[answer["prompt_id"]]
    assert entry["prompt"][1] == answer["prompt_id"] and entry["prompt"][2] == workflow()
    [picture] = entry["outputs"]["3"]["images"]
    assert picture["subfolder"] == str(job.id) and picture["type"] == "output"
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert [message[0] for message in entry["status"]["messages"]] == [
        "execution_start",
        "execution_cached",
        "execution_success",
    ]
    assert entry["meta"]["3"]["display_node"] == "3"
    served = comfy.get("/comfy/view", picture)
    assert served.status_code == 200 and b"".join(served.streaming_content) == image
    assert keyed(UserFactory()).get("/comfy/view", picture).status_code == 404
    assert keyed(UserFactory()).get(f"/comfy/history/{answer['prompt_id']}").json() == {}
    assert set(comfy.get("/comfy/history").json()) == {answer["prompt_id"]}


def test_a_failed_job_is_an_error_entry_with_the_reason(comfy):
    answer = submit(comfy, workflow())
    finish(answer["prompt_id"], status=JobStatus.FAILED)
    Job.objects.filter(front_door__prompt_id=answer["prompt_id"]).update(
        failure_category="out_of_memory",
        error_message="TestSleep #2: OutOfMemoryError",
        error_details={"node_id": "2", "node_type": "TestSleep", "exception_type": "torch.OutOfMemoryError"},
    )
    entry = comfy.get(f"/comfy/history/{answer['prompt_id']}").json()[answer["prompt_id"]]
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    kind, data = entry["status"]["messages"][-1]
    assert kind == "execution_error" and data["node_id"] == "2" and data["exception_type"] == "torch.OutOfMemoryError"


def test_history_pages_like_comfyui_and_delete_hides_without_deleting_the_job(comfy):
    ids = [submit(comfy, workflow())["prompt_id"] for _ in range(3)]
    for prompt_id in ids:
        finish(prompt_id)
    assert list(comfy.get("/comfy/history?max_items=2").json()) == ids[1:]
    assert list(comfy.get("/comfy/history?max_items=1&offset=0").json()) == ids[:1]
    assert post_json(comfy, "/comfy/history", {"delete": [ids[0]]}).status_code == 200
    assert list(comfy.get("/comfy/history").json()) == ids[1:]
    assert post_json(comfy, "/comfy/history", {"clear": True}).status_code == 200
    assert comfy.get("/comfy/history").json() == {}
    assert Job.objects.count() == 3 and len(comfy.get("/api/jobs/").json()["results"]) == 3


# --- uploads -------------------------------------------------------------------------------------


def upload(client: APIClient, name: str, data: bytes, **fields: str) -> Any:
    return client.post("/comfy/upload/image", {"image": ContentFile(data, name=name), **fields}, format="multipart")


def test_an_uploaded_name_in_loadimage_reads_the_callers_asset(comfy, artist):
    picture = png(8, 8)
    answer = upload(comfy, "cat.png", picture)
    assert answer.status_code == 200 and answer.json() == {"name": "cat.png", "subfolder": "", "type": "input"}
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "cat.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
    }
    submitted = submit(comfy, prompt)
    row = FrontDoorPrompt.objects.get(prompt_id=submitted["prompt_id"])
    asset = artist.assets.get()
    assert row.job.workflow["1"]["inputs"]["image"] == f"asset:{asset.id}"
    assert comfy.get("/comfy/queue").json()["queue_pending"][0][2] == prompt  # shown as sent
    served = comfy.get("/comfy/view", {"filename": "cat.png", "type": "input", "subfolder": ""})
    assert b"".join(served.streaming_content) == picture
    assert keyed(UserFactory()).get("/comfy/view", {"filename": "cat.png", "type": "input"}).status_code == 404


def test_a_taken_name_is_kept_unless_overwrite_as_comfyui_does(comfy):
    assert upload(comfy, "a.png", png(8, 8)).json()["name"] == "a.png"
    assert upload(comfy, "a.png", png(8, 8)).json()["name"] == "a.png"  # the same bytes: the same name
    assert upload(comfy, "a.png", png(9, 9)).json()["name"] == "a (1).png"
    assert upload(comfy, "a.png", png(10, 10), overwrite="true").json()["name"] == "a.png"
    assert upload(comfy, "b.png", png(8, 8), subfolder="clipspace").json()["subfolder"] == "clipspace"
    for fields in ({"subfolder": "../x"}, {"type": "output"}):
        assert upload(comfy, "c.png", png(8, 8), **fields).status_code == 400
    assert upload(comfy, "d.png", b"not an image at all").status_code == 400


# --- auth, aliases, the fleet, what is not supported ---------------------------------------------


def test_credentials_header_basic_and_none(artist):
    key = api_key_for(artist)
    anonymous = APIClient()
    assert anonymous.get("/comfy/queue").status_code == 401
    basic = APIClient()
    basic.credentials(HTTP_AUTHORIZATION="Basic " + base64.b64encode(f"me:{key}".encode()).decode())
    assert basic.get("/comfy/queue").status_code == 200
    wrong = APIClient()
    wrong.credentials(HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"me:password").decode())
    assert wrong.get("/comfy/queue").status_code == 401
    bearer = APIClient()
    bearer.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert bearer.get("/comfy/queue").status_code == 200


def test_comfyuis_api_aliases_and_root_paths_answer_the_same(comfy):
    for path in ("/comfy/api/prompt", "/prompt"):
        response = post_json(comfy, path, {"prompt": workflow()})
        assert response.status_code == 200 and "prompt_id" in response.json()
    assert comfy.get("/comfy/api/queue").status_code == comfy.get("/queue").status_code == 200


def test_object_info_is_the_fleets(comfy, settings):
    info = comfy.get("/comfy/object_info").json()
    assert {"SaveImage", "EmptyImage", "TestSleep"} <= set(info)
    assert set(comfy.get("/comfy/object_info/SaveImage").json()) == {"SaveImage"}
    assert comfy.get("/comfy/object_info/NoSuchNode").json() == {}
    settings.WORKFLOW_NODE_CLASSES_DENIED = ["TestSleep"]
    assert "TestSleep" not in comfy.get("/comfy/object_info").json()


def test_system_stats_show_the_fleet_and_no_host_details(comfy):
    stats = comfy.get("/comfy/system_stats").json()
    assert stats["system"]["argv"] == [] and stats["system"]["os"] == "fleet"
    assert stats["system"]["python_version"] == ""
    assert all(device["name"].startswith("default") for device in stats["devices"])
    assert comfy.get("/comfy/features").json()["supports_preview_metadata"] is True
    assert comfy.get("/comfy/extensions").json() == []
    assert isinstance(comfy.get("/comfy/embeddings").json(), list)


def test_a_fleet_that_does_not_answer_leaves_lists_empty(comfy, settings):
    settings.COMFYUI_BACKENDS = {"default": "http://127.0.0.1:9"}
    fleet_info_forget()
    assert comfy.get("/comfy/object_info").json() == {}
    assert comfy.get("/comfy/system_stats").json()["devices"] == []
    # The GPU's ComfyUI validates it later; the project's own checks still run now.
    assert post_json(comfy, "/comfy/prompt", {"prompt": workflow()}).status_code == 200


def test_what_the_front_door_does_not_do_is_a_clear_501(comfy):
    for method, path in (
        ("post", "/comfy/free"),
        ("get", "/comfy/api/internal/logs"),
        ("get", "/comfy/view_metadata/x"),
    ):
        response = getattr(comfy, method)(path)
        assert response.status_code == 501 and response.json()["error"]["type"] == "not_supported"
    assert comfy.get("/comfy/view", {"filename": "x.png", "channel": "a"}).status_code == 501
    assert comfy.post("/free").status_code == 501 and comfy.get("/internal/logs").status_code == 501
    assert comfy.get("/nothing-comfyui-has").status_code == 404  # the rest of the site keeps its own answers


def test_a_submitted_or_deleted_prompt_tells_the_callers_sockets_that_their_queue_changed(
    comfy, artist, django_capture_on_commit_callbacks
):
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from comfy_api.ws_announce import front_door_group

    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(front_door_group(artist.pk), channel)
    with django_capture_on_commit_callbacks(execute=True):
        answer = submit(comfy, workflow())
    assert async_to_sync(layer.receive)(channel)["type"] == "front_door.queue"
    with django_capture_on_commit_callbacks(execute=True):
        post_json(comfy, "/comfy/queue", {"delete": [answer["prompt_id"]]})
    assert async_to_sync(layer.receive)(channel)["type"] == "front_door.queue"


def test_a_mask_upload_paints_the_masks_alpha_into_the_original_as_comfyui_does(comfy):
    import io

    from PIL import Image

    assert upload(comfy, "photo.png", png(6, 4, (200, 100, 50))).status_code == 200
    mask = Image.new("RGBA", (6, 4), (0, 0, 0, 255))
    mask.putpixel((1, 1), (0, 0, 0, 0))
    painted = io.BytesIO()
    mask.save(painted, format="PNG")
    reference = json.dumps({"filename": "photo.png", "subfolder": "", "type": "input"})
    answer = comfy.post(
        "/comfy/upload/mask",
        {"image": ContentFile(painted.getvalue(), name="clipspace-mask.png"), "original_ref": reference},
        format="multipart",
    )
    assert answer.status_code == 200, answer.content
    assert answer.json() == {"name": "clipspace-mask.png", "subfolder": "", "type": "input"}
    served = comfy.get("/comfy/view", {"filename": "clipspace-mask.png", "type": "input"})
    combined = Image.open(io.BytesIO(b"".join(served.streaming_content)))
    assert combined.mode == "RGBA" and combined.size == (6, 4)
    assert combined.getpixel((0, 0)) == (200, 100, 50, 255) and combined.getpixel((1, 1))[3] == 0

    def mask_upload(data: bytes, ref: str) -> Any:
        return comfy.post(
            "/comfy/upload/mask", {"image": ContentFile(data, name="m.png"), "original_ref": ref}, format="multipart"
        )

    assert mask_upload(png(3, 3), reference).status_code == 400  # not the original's size
    assert mask_upload(painted.getvalue(), "not json").status_code == 400
    missing = json.dumps({"filename": "nope.png", "type": "input"})
    assert mask_upload(painted.getvalue(), missing).status_code == 404
    theirs = keyed(UserFactory()).post(
        "/comfy/upload/mask",
        {"image": ContentFile(painted.getvalue(), name="m.png"), "original_ref": reference},
        format="multipart",
    )
    assert theirs.status_code == 404  # another user's upload is no original of theirs


def test_history_and_queue_pages_cost_the_same_queries_for_3_prompts_as_for_30(comfy):
    def counted(path: str) -> int:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as queries:
            assert comfy.get(path).status_code == 200
        return len(queries)

    def grow(to: int) -> None:
        while FrontDoorPrompt.objects.count() < to:
            finish(submit(comfy, workflow())["prompt_id"], image=png(4, 4))
            submit(comfy, workflow())  # and one waiting

    grow(6)
    small = {path: counted(path) for path in ("/comfy/history", "/comfy/queue", "/comfy/prompt")}
    grow(60)
    assert {path: counted(path) for path in small} == small


def test_numbers_are_checked_against_the_fleets_min_and_max_as_comfyui_does(comfy):
    body = post_json(comfy, "/comfy/prompt", {"prompt": workflow(**{"2": {"seconds": -1}})}).json()
    [error] = body["node_errors"]["2"]["errors"]
    assert error["type"] == "value_smaller_than_min" and error["details"] == "seconds"
    assert error["extra_info"]["received_value"] == -1
    assert Job.objects.count() == 0
