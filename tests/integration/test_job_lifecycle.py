"""A job's whole path on real parts: REST -> Redis -> Celery GPU worker -> ComfyUI simulator -> back.

The worker is a real `celery worker` process; the database is the test database (PostgreSQL in CI);
websocket subscribers go through the real ASGI application and the Redis channel layer.
"""

from __future__ import annotations

import copy
import re
import time
from typing import Any

import pytest
import requests
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from anime_production.asgi import application
from jobs.models import Job
from jobs.tasks import job_run
from jobs.tracking import job_track
from tests.conftest import wait_for
from tests.factories import SLEEP_WORKFLOW, api_key_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

FINAL = {"completed", "failed", "cancelled"}


def sleep_workflow(seconds: float, prefix: str = "test") -> dict:
    workflow = copy.deepcopy(SLEEP_WORKFLOW)
    workflow["2"]["inputs"]["seconds"] = seconds
    workflow["3"]["inputs"]["filename_prefix"] = prefix
    # A distinct colour per job, so ComfyUI's cache never serves one job from another.
    workflow["1"]["inputs"]["color"] = time.monotonic_ns() % 16_777_215
    return workflow


def submit(api, workflow: dict, **extra) -> dict:
    response = api.post("/api/jobs/", {"workflow": workflow, "job_type": "image", **extra}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def wait_final(api, job_id: str, timeout: float = 60.0) -> dict:
    def final():
        body = api.get(f"/api/jobs/{job_id}/").json()
        return body if body["status"] in FINAL else None

    return wait_for(final, timeout=timeout, message=f"job {job_id} to finish")


def comfy_history(sim_url: str, prompt_id: str) -> dict:
    return requests.get(f"{sim_url}/history/{prompt_id}", timeout=5).json()


def test_job_completes_with_its_output_stored_and_downloadable(live, api):
    job = submit(api, sleep_workflow(0.5, prefix="lifecycle"))
    done = wait_final(api, job["id"])
    assert done["status"] == "completed", done
    assert done["progress_percent"] == 100.0
    assert done["nodes_done"] == done["nodes_total"] == 3
    (output,) = done["outputs"]
    assert output["media_type"] == "image/png" and output["node_id"] == "3"
    assert output["comfy_filename"].startswith("lifecycle_")
    download = api.get(output["download_url"])
    assert download.status_code == 200
    content = b"".join(download.streaming_content)
    assert content.startswith(b"\x89PNG\r\n\x1a\n") and len(content) == output["size_bytes"]


def test_websocket_subscriber_sees_snapshot_node_progress_and_final_state(live, api, user, simulator_session):
    display_name = requests.get(f"{simulator_session.url}/object_info/TestSleep", timeout=5).json()["TestSleep"][
        "display_name"
    ]
    token = api_key_for(user)
    job = submit(api, sleep_workflow(1.5))

    async def watch():
        headers = [(b"origin", b"http://localhost:8000"), (b"x-api-key", token.encode())]
        ws = WebsocketCommunicator(application, f"/ws/jobs/{job['id']}/?after=0", headers=headers)
        connected, _ = await ws.connect()
        assert connected
        seen: list[dict[str, Any]] = []
        while not seen or (seen[-1]["job"] or {}).get("status") not in FINAL:
            seen.append(await ws.receive_json_from(timeout=30))
        await ws.disconnect()
        return seen

    seen = async_to_sync(watch)()
    assert seen[0]["type"] == "snapshot"
    assert all(m["type"] == "update" for m in seen[1:])
    updates = [m["job"] for m in seen[1:] if m["job"]]
    versions = [seen[0]["job"]["version"]] + [u["version"] for u in updates]
    assert versions == sorted(versions), "states out of order"
    timeline = [e for m in seen for e in m["events"]]
    seqs = [e["seq"] for e in timeline]
    assert seqs == sorted(set(seqs)), "timeline events out of order or repeated"
    assert ("node_started", "2") in [(e["kind"], e["node_id"]) for e in timeline]
    assert [e["data"]["to"] for e in timeline if e["kind"] == "status"][-2:] == ["running", "completed"]
    sleeping = [u for u in updates if u["current_node"] and u["current_node"]["id"] == "2" and u["step"]]
    assert sleeping, "no step progress for the sleeping node"
    assert all(u["current_node"]["name"] == display_name for u in sleeping)
    assert len({u["step"]["value"] for u in sleeping}) >= 3, "progress did not move"
    percents = [u["progress_percent"] for u in updates]
    assert percents == sorted(percents), "overall progress went backwards"
    assert updates[-1]["status"] == "completed" and updates[-1]["progress_percent"] == 100.0
    assert updates[-1]["outputs"], "the final state carries the outputs"
    # Coalesced: ComfyUI sent ~150 progress messages for this node; far fewer reached the browser.
    assert len(updates) < 40


def test_node_that_raises_fails_the_job_with_comfyuis_exception(live, api):
    workflow = sleep_workflow(0.1)
    workflow["2"] = {"class_type": "TestSyncError", "inputs": {"value": ["1", 0], "error_message": "boom"}}
    done = wait_final(api, submit(api, workflow)["id"])
    assert done["status"] == "failed"
    assert done["failure_category"] == "node_error"
    details = done["error"]["details"]
    assert details["exception_type"] == "RuntimeError"
    assert details["node_type"] == "TestSyncError" and details["node_id"] == "2"
    assert details["exception_message"] in done["error"]["message"]


def test_cancel_waiting_job_never_reaches_comfyui(live, api, simulator_session):
    # Long enough that the waiting job is not yet put into ComfyUI's queue ahead of the running
    # one's end (HANDOVER_AHEAD_SECONDS before it, by the running node's own pace).
    running = submit(api, sleep_workflow(5.0))
    waiting = submit(api, sleep_workflow(0.2))
    wait_for(lambda: api.get(f"/api/jobs/{running['id']}/").json()["status"] == "running", message="first job running")
    response = api.post(f"/api/jobs/{waiting['id']}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert wait_final(api, running["id"])["status"] == "completed"
    time.sleep(1.0)  # time for the worker to take (and drop) the cancelled job's message
    assert comfy_history(simulator_session.url, waiting["id"]) == {}
    queue = requests.get(f"{simulator_session.url}/queue", timeout=5).json()
    assert waiting["id"] not in str(queue)
    assert Job.objects.get(pk=waiting["id"]).submitted_at is None


def test_cancel_running_job_interrupts_it_in_comfyui(live, api, simulator_session):
    job = submit(api, sleep_workflow(20.0))
    wait_for(
        lambda: (api.get(f"/api/jobs/{job['id']}/").json().get("step") or {}).get("value", 0) > 0.2,
        message="job running with progress",
    )
    response = api.post(f"/api/jobs/{job['id']}/cancel/")
    assert response.status_code == 202
    started = time.monotonic()
    done = wait_final(api, job["id"], timeout=15)
    assert done["status"] == "cancelled"
    assert time.monotonic() - started < 10, "cancel took as long as the job"
    history = comfy_history(simulator_session.url, job["id"])[job["id"]]
    assert history["status"]["status_str"] == "error"
    assert any(name == "execution_interrupted" for name, _ in history["status"]["messages"])


def test_second_delivery_of_the_task_does_not_submit_a_second_prompt(live, api, simulator_session):
    before = requests.get(f"{simulator_session.url}/sim/submissions", timeout=5).json()
    job = submit(api, sleep_workflow(2.0))
    job_run.apply_async((job["id"],), queue="gpu.default")  # the broker delivers it again, later
    wait_for(lambda: api.get(f"/api/jobs/{job['id']}/").json()["status"] == "running", message="job running")
    # And once more while the first delivery is still following the job, from another process.
    job_track(job["id"])
    assert Job.objects.get(pk=job["id"]).status == "running", "the duplicate delivery disturbed the job"
    assert wait_final(api, job["id"])["status"] == "completed"
    time.sleep(1.0)  # let the queued duplicate run (and stop)
    after = requests.get(f"{simulator_session.url}/sim/submissions", timeout=5).json()
    submitted = [s for s in after[len(before) :] if s["prompt_id"] == job["id"]]
    assert len(submitted) == 1
    assert Job.objects.get(pk=job["id"]).deliveries == 1


def test_hundreds_of_progress_messages_make_bounded_writes_and_broadcasts(live, api, settings):
    """~100 progress messages/s from ComfyUI; the database and the browsers see a bounded rate."""
    job = submit(api, sleep_workflow(3.0))
    done = wait_final(api, job["id"])
    assert done["status"] == "completed"
    line = wait_for(
        lambda: next((t for t in live.log().splitlines() if f"job {job['id']}: " in t and "broadcasts" in t), None),
        timeout=10,
        message="the tracker's closing counts in the worker log",
    )
    counts = dict(
        (label, int(number))
        for number, label in re.findall(r"(\d+) (ComfyUI messages|database writes|broadcasts)", line or "")
    )
    assert counts["ComfyUI messages"] >= 250, counts  # progress + progress_state, ~200 per second
    # At most one progress write per TRACKER_DB_INTERVAL and one broadcast per
    # TRACKER_BROADCAST_INTERVAL over the job's real run time, plus one of each per status change.
    run = done["run_seconds"] + 1.0
    assert counts["database writes"] <= run / settings.TRACKER_DB_INTERVAL + 6, counts
    assert counts["broadcasts"] <= run / settings.TRACKER_BROADCAST_INTERVAL + 6, counts
