"""ComfyUI protocol behaviour of the simulator beyond what the recorded traces show.

Where no trace exists the reference is ComfyUI 0.8's server.py / execution.py; each test names
the behaviour a client relies on (routing by clientId, interrupt targeting, queue priority,
restart amnesia, path traversal on /view, ...).
"""

from __future__ import annotations

import io
import time
from typing import Any

import pytest
import requests
from PIL import Image

from devtools.simulator_process import (
    EventLog,
    RecordingSocket,
    SimulatorClient,
    SimulatorProcess,
    ws_message,
)

PROMPT_SPECIFIC = {
    "execution_start",
    "execution_cached",
    "executing",
    "progress",
    "progress_state",
    "executed",
    "execution_success",
    "execution_error",
    "execution_interrupted",
}


def sleep_prompt(color: int = 1, seconds: float = 0.2, prefix: str = "test") -> dict[str, Any]:
    return {
        "prompt": {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": color}},
            "2": {"class_type": "TestSleep", "inputs": {"value": ["1", 0], "seconds": seconds}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
        }
    }


def connected_client(sim: SimulatorProcess, client_id: str | None = None) -> SimulatorClient:
    client = SimulatorClient(sim, client_id)
    client.connect()
    return client


def test_prompt_messages_reach_only_the_submitting_client(comfyui_sim: SimulatorProcess) -> None:
    submitter = connected_client(comfyui_sim)
    bystander = connected_client(comfyui_sim)
    prompt_id = submitter.submit(sleep_prompt())
    submitter.wait_finished(prompt_id)
    # The closing status is broadcast before `executing null`; after it the bystander gets nothing.
    bystander.log.wait_for(ws_message("status", status={"exec_info": {"queue_remaining": 0}}), after=1)
    time.sleep(0.1)

    submitter_types = {m["type"] for m in submitter.log.messages()}
    bystander_types = {m["type"] for m in bystander.log.messages()}
    assert PROMPT_SPECIFIC - {"execution_error", "execution_interrupted", "execution_cached"} <= submitter_types
    assert bystander_types == {"status"}
    assert len(bystander.log.messages("status")) >= 4  # its own sid status, put, get, done


def test_prompt_without_client_id_broadcasts_progress_but_no_executing(comfyui_sim: SimulatorProcess) -> None:
    # ComfyUI guards executing/executed/execution_* with `client_id is not None`, not progress.
    watcher = connected_client(comfyui_sim)
    answer = requests.post(comfyui_sim.url + "/prompt", json=sleep_prompt(), timeout=10).json()
    watcher.log.wait_for(ws_message("status", status={"exec_info": {"queue_remaining": 0}}), after=1, timeout=15)
    types = {m["type"] for m in watcher.log.messages()}
    assert {"progress", "progress_state"} <= types
    assert not types & {"executing", "executed", "execution_start", "execution_success"}
    history = requests.get(f"{comfyui_sim.url}/history/{answer['prompt_id']}", timeout=10).json()
    assert history[answer["prompt_id"]]["status"]["status_str"] == "success"


def test_socket_without_client_id_gets_a_generated_sid(comfyui_sim: SimulatorProcess) -> None:
    log = EventLog()
    socket = RecordingSocket(comfyui_sim.url, None, log)
    socket.connect()
    status = log.wait_for(ws_message("status"))["msg"]["data"]
    socket.close()
    assert len(status["sid"]) == 32 and int(status["sid"], 16) >= 0


def test_interrupt_without_body_stops_whatever_runs(comfyui_sim: SimulatorProcess) -> None:
    client = connected_client(comfyui_sim)
    prompt_id = client.submit(sleep_prompt(seconds=5))
    client.wait_progress(prompt_id, 3)
    assert requests.post(comfyui_sim.url + "/interrupt", timeout=10).status_code == 200
    client.wait_finished(prompt_id, timeout=5)
    interrupted = client.log.messages("execution_interrupted")
    assert [m["data"]["node_id"] for m in interrupted] == ["2"]
    entry = client.http("GET", f"/history/{prompt_id}")[prompt_id]
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False


def test_interrupt_naming_another_prompt_leaves_the_running_one(comfyui_sim: SimulatorProcess) -> None:
    client = connected_client(comfyui_sim)
    running = client.submit(sleep_prompt(color=1, seconds=0.6))
    pending = client.submit(sleep_prompt(color=2, seconds=0.1))
    client.wait_progress(running, 3)
    client.http("POST", "/interrupt", {"prompt_id": pending})
    client.wait_finished(pending)
    assert client.log.messages("execution_interrupted") == []
    assert [m["data"]["prompt_id"] for m in client.log.messages("execution_success")] == [running, pending]


def test_interrupt_sent_while_idle_does_not_hit_the_next_prompt(comfyui_sim: SimulatorProcess) -> None:
    client = connected_client(comfyui_sim)
    client.http("POST", "/interrupt")
    prompt_id = client.submit(sleep_prompt())
    client.wait_finished(prompt_id)
    assert [m["data"]["prompt_id"] for m in client.log.messages("execution_success")] == [prompt_id]


def test_front_of_queue_and_explicit_number_set_priority(comfyui_sim: SimulatorProcess) -> None:
    client = connected_client(comfyui_sim)
    running = client.submit(sleep_prompt(color=1, seconds=0.5))
    client.wait_progress(running, 1)
    normal = client.submit(sleep_prompt(color=2, seconds=0.05))
    front = client.http(
        "POST", "/prompt", {**sleep_prompt(color=3, seconds=0.05), "front": True, "client_id": client.client_id}
    )
    numbered = client.http(
        "POST", "/prompt", {**sleep_prompt(color=4, seconds=0.05), "number": -100, "client_id": client.client_id}
    )
    assert front["number"] < 0 and numbered["number"] == -100.0
    client.wait_finished(normal)
    order = [m["data"]["prompt_id"] for m in client.log.messages("execution_start")]
    assert order == [running, numbered["prompt_id"], front["prompt_id"], normal]


def test_caller_chosen_prompt_id_is_kept_and_duplicates_are_accepted(comfyui_sim: SimulatorProcess) -> None:
    client = connected_client(comfyui_sim)
    chosen = "0f0f0f0f-1111-2222-3333-444444444444"
    first = client.submit({**sleep_prompt(color=7), "prompt_id": chosen})
    second = client.submit({**sleep_prompt(color=8), "prompt_id": chosen})
    assert first == second == chosen
    client.log.wait_for(lambda e: client.log.count(ws_message("executing", node=None, prompt_id=chosen)) == 2)
    assert list(client.http("GET", f"/history/{chosen}")) == [chosen]


def test_queue_delete_clear_and_history_delete_clear(comfyui_sim: SimulatorProcess) -> None:
    client = connected_client(comfyui_sim)
    running = client.submit(sleep_prompt(color=1, seconds=0.6))
    client.wait_progress(running, 1)
    cleared = [client.submit(sleep_prompt(color=c, seconds=0.05)) for c in (2, 3, 4)]
    client.http("POST", "/queue", {"clear": True})
    queue = client.http("GET", "/queue")
    assert [item[1] for item in queue["queue_running"]] == [running]
    assert queue["queue_pending"] == []
    assert client.http("GET", "/prompt") == {"exec_info": {"queue_remaining": 1}}
    assert client.http("GET", f"/api/jobs/{cleared[0]}") == {"error": "Job not found"}
    client.wait_finished(running)
    for prompt_id in cleared:
        assert client.http("GET", f"/history/{prompt_id}") == {}

    second = client.submit(sleep_prompt(color=5, seconds=0.05))
    client.wait_finished(second)
    client.http("POST", "/history", {"delete": [running]})
    assert list(client.http("GET", "/history")) == [second]
    client.http("POST", "/history", {"clear": True})
    assert client.http("GET", "/history") == {}


def test_restart_forgets_queue_and_history_but_keeps_files(comfyui_sim: SimulatorProcess) -> None:
    client = connected_client(comfyui_sim)
    done = client.submit(sleep_prompt(color=1, seconds=0.05, prefix="keep"))
    client.wait_finished(done)
    running = client.submit(sleep_prompt(color=2, seconds=5))
    pending = client.submit(sleep_prompt(color=3, seconds=5))
    client.wait_progress(running, 1)
    client.finish()

    comfyui_sim.restart()

    after = connected_client(comfyui_sim)
    assert after.http("GET", "/queue") == {"queue_running": [], "queue_pending": []}
    for prompt_id in (done, running, pending):
        assert after.http("GET", f"/history/{prompt_id}") == {}
        assert after.http("GET", f"/api/jobs/{prompt_id}") == {"error": "Job not found"}
    assert (comfyui_sim.output_dir / "keep_00001_.png").is_file()
    # ComfyUI finds the next counter by scanning the folder, so numbering survives the restart.
    again = after.submit(sleep_prompt(color=4, seconds=0.05, prefix="keep"))
    after.wait_finished(again)
    (executed,) = after.log.messages("executed")
    assert executed["data"]["output"]["images"][0]["filename"] == "keep_00002_.png"


def test_saved_image_is_a_real_png_served_by_view(comfyui_sim: SimulatorProcess) -> None:
    client = connected_client(comfyui_sim)
    prompt_id = client.submit(sleep_prompt(color=0x102030, seconds=0.05, prefix="shots/frame"))
    client.wait_finished(prompt_id)
    (image,) = client.log.messages("executed")[0]["data"]["output"]["images"]
    assert image == {"filename": "frame_00001_.png", "subfolder": "shots", "type": "output"}

    response = requests.get(comfyui_sim.url + "/view", params=image, timeout=10)
    assert response.status_code == 200
    png = Image.open(io.BytesIO(response.content))
    assert (png.format, png.size, png.getpixel((5, 5))) == ("PNG", (64, 48), (0x10, 0x20, 0x30))
    assert '"TestSleep"' in png.info["prompt"]
    api = requests.get(comfyui_sim.url + "/api/view", params=image, timeout=10)
    assert api.content == response.content
    preview = requests.get(comfyui_sim.url + "/view", params={**image, "preview": "jpeg;80"}, timeout=10)
    assert preview.headers["Content-Type"] == "image/jpeg"


def test_view_refuses_paths_outside_its_folders(comfyui_sim: SimulatorProcess) -> None:
    client = connected_client(comfyui_sim)
    prompt_id = client.submit(sleep_prompt(seconds=0.01, prefix="safe"))
    client.wait_finished(prompt_id)
    secret = comfyui_sim.output_dir.parent / "secret.txt"
    secret.write_text("do not serve")

    def status(**params: str) -> int:
        return requests.get(comfyui_sim.url + "/view", params=params, timeout=10).status_code

    assert status(filename="../secret.txt") == 400
    assert status(filename="/etc/passwd") == 400
    assert status(filename="secret.txt", subfolder="..") == 403
    assert status(filename="secret.txt", subfolder="../../..") == 403
    assert status(filename="safe_00001_.png", type="nowhere") == 400
    assert status(filename="missing.png") == 404
    assert status(subfolder="") == 404
    assert status(filename="safe_00001_.png") == 200
    assert status(filename="safe_00001_.png [output]", type="temp") == 200


def test_a_valid_output_runs_even_when_another_fails_validation(comfyui_sim: SimulatorProcess) -> None:
    client = connected_client(comfyui_sim)
    prompt = sleep_prompt(seconds=0.05)["prompt"]
    prompt["4"] = {"class_type": "TestSleep", "inputs": {"value": ["1", 0], "seconds": -1}}
    prompt["5"] = {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "bad"}}
    answer = client.http("POST", "/prompt", {"prompt": prompt, "client_id": client.client_id})
    assert answer["node_errors"]["4"]["errors"][0]["type"] == "value_smaller_than_min"
    assert answer["node_errors"]["4"]["dependent_outputs"] == ["5"]
    client.wait_finished(answer["prompt_id"])
    assert [m["data"]["node"] for m in client.log.messages("executed")] == ["3"]


def test_validation_reports_comfyui_error_types(comfyui_sim: SimulatorProcess) -> None:
    client = connected_client(comfyui_sim)

    def first_error(prompt: dict[str, Any]) -> tuple[int, str]:
        response = requests.post(comfyui_sim.url + "/prompt", json={"prompt": prompt}, timeout=10)
        body = response.json()
        errors = [e["type"] for n in body.get("node_errors", {}).values() for e in n["errors"]]
        return response.status_code, errors[0] if errors else body["error"]["type"]

    base = sleep_prompt()["prompt"]
    missing = {**base, "2": {"class_type": "TestSleep", "inputs": {"value": ["1", 0]}}}
    mismatch = {**base, "3": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "x"}}}
    mismatch["9"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    no_class = {**base, "2": {"inputs": {}}}
    assert first_error(missing) == (400, "required_input_missing")
    assert first_error(mismatch) == (400, "return_type_mismatch")
    assert first_error(no_class) == (400, "invalid_prompt")
    no_prompt = requests.post(comfyui_sim.url + "/prompt", json={"client_id": "x"}, timeout=10)
    assert (no_prompt.status_code, no_prompt.json()["error"]["type"]) == (400, "no_prompt")
    assert client.http("GET", "/queue") == {"queue_running": [], "queue_pending": []}


def test_default_checkpoints_exclude_the_missing_model(comfyui_sim: SimulatorProcess) -> None:
    info = requests.get(comfyui_sim.url + "/object_info/CheckpointLoaderSimple", timeout=10).json()
    names = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
    assert "sd_xl_base_1.0.safetensors" in names and "anime_v3.safetensors" not in names
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "anime_v3.safetensors"}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "x"}},
    }
    response = requests.post(comfyui_sim.url + "/prompt", json={"prompt": prompt}, timeout=10)
    assert response.status_code == 400
    (error,) = response.json()["node_errors"]["1"]["errors"]
    assert error["type"] == "value_not_in_list"
    assert error["details"] == f"ckpt_name: 'anime_v3.safetensors' not in {names}"


def test_object_info_uses_comfyui_names_and_shape(comfyui_sim: SimulatorProcess) -> None:
    info = requests.get(comfyui_sim.url + "/object_info", timeout=10).json()
    display_names = {name: info[name]["display_name"] for name in info}
    assert display_names["KSampler"] == "KSampler"
    assert display_names["VAEDecode"] == "VAE Decode"
    assert display_names["CheckpointLoaderSimple"] == "Load Checkpoint"
    assert display_names["CLIPTextEncode"] == "CLIP Text Encode (Prompt)"
    assert display_names["EmptyLatentImage"] == "Empty Latent Image"
    assert display_names["SaveImage"] == "Save Image"
    assert display_names["EmptyImage"] == "EmptyImage"
    ksampler = info["KSampler"]
    assert {"input", "input_order", "output", "output_is_list", "output_name", "name", "display_name",
            "description", "python_module", "category", "output_node"} <= set(ksampler)  # fmt: skip
    assert ksampler["output"] == ["LATENT"] and ksampler["category"] == "sampling"
    assert ksampler["input"]["required"]["steps"][0] == "INT"
    assert info["SaveImage"]["output_node"] is True and info["KSampler"]["output_node"] is False
    single = requests.get(comfyui_sim.url + "/api/object_info/SaveImage", timeout=10).json()
    assert single == {"SaveImage": info["SaveImage"]}
    assert requests.get(comfyui_sim.url + "/object_info/NoSuchNode", timeout=10).json() == {}


def test_system_stats_reports_a_device_like_comfyui(comfyui_sim: SimulatorProcess) -> None:
    stats = requests.get(comfyui_sim.url + "/system_stats", timeout=10).json()
    assert {"os", "ram_total", "ram_free", "comfyui_version", "python_version", "pytorch_version",
            "embedded_python", "argv"} <= set(stats["system"])  # fmt: skip
    (device,) = stats["devices"]
    assert set(device) == {"name", "type", "index", "vram_total", "vram_free", "torch_vram_total", "torch_vram_free"}
    assert 0 < device["vram_free"] <= device["vram_total"]


def test_api_jobs_lists_filters_and_validates(comfyui_sim: SimulatorProcess) -> None:
    client = connected_client(comfyui_sim)
    ok = client.submit(sleep_prompt(color=1, seconds=0.01))
    client.wait_finished(ok)
    failed = client.submit({"prompt": {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "TestSyncError", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
    }})  # fmt: skip
    client.wait_finished(failed)

    listing = client.http("GET", "/api/jobs")
    assert [(j["id"], j["status"]) for j in listing["jobs"]] == [(failed, "failed"), (ok, "completed")]
    assert listing["pagination"] == {"offset": 0, "limit": None, "total": 2, "has_more": False}
    assert [j["id"] for j in client.http("GET", "/api/jobs?status=completed")["jobs"]] == [ok]
    assert [j["id"] for j in client.http("GET", "/api/jobs?sort_order=asc&limit=1")["jobs"]] == [ok]
    job = client.http("GET", f"/api/jobs/{failed}")
    assert job["execution_error"]["exception_type"] == "RuntimeError"
    for bad in ("status=bogus", "limit=0", "limit=x", "sort_by=name", "sort_order=up"):
        assert requests.get(f"{comfyui_sim.url}/api/jobs?{bad}", timeout=10).status_code == 400


def test_feature_flags_count_only_as_the_first_message(comfyui_sim: SimulatorProcess) -> None:
    client = connected_client(comfyui_sim)
    client.socket.send_json({"type": "hello", "data": {}})
    client.socket.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
    prompt = sleep_prompt()["prompt"]
    prompt["2"] = {
        "class_type": "ProbePreviewSampler",
        "inputs": {"image": ["1", 0], "steps": 2, "seconds_per_step": 0.01},
    }
    prompt_id = client.submit({"prompt": prompt})
    client.wait_finished(prompt_id)
    assert client.log.messages("feature_flags") == []
    frames = [e for e in client.log.events if e["kind"] == "ws_binary"]
    assert [f["event_type"] for f in frames] == [1, 1]


def test_reconnecting_without_closing_loses_the_newer_socket(comfyui_sim: SimulatorProcess) -> None:
    # ComfyUI keeps one socket per clientId and, when the OLD socket closes, drops the id's entry,
    # even though it now belongs to the new socket: a client must close before reconnecting.
    old = connected_client(comfyui_sim, client_id="same-client")
    new_log = EventLog()
    new = RecordingSocket(comfyui_sim.url, "same-client", new_log)
    new.connect()
    new_log.wait_for(ws_message("status", sid="same-client"))
    old.finish()
    time.sleep(0.2)
    prompt_id = old.submit(sleep_prompt(seconds=0.05))
    watcher = connected_client(comfyui_sim)
    watcher.log.wait_for(ws_message("status", status={"exec_info": {"queue_remaining": 0}}), after=1, timeout=10)
    new.close()
    assert not any(m["type"] == "executing" for m in new_log.messages())
    assert requests.get(f"{comfyui_sim.url}/history/{prompt_id}", timeout=10).json()[prompt_id]


def test_progress_comes_about_every_10_ms_with_progress_state(comfyui_sim: SimulatorProcess) -> None:
    client = connected_client(comfyui_sim)
    prompt_id = client.submit(sleep_prompt(seconds=0.5))
    client.wait_finished(prompt_id)
    progress = [m["data"] for m in client.log.messages("progress")]
    # Nominally 50 updates; a loaded machine may manage fewer, never only a handful.
    assert len(progress) >= 10
    assert progress[-1]["value"] == progress[-1]["max"] == 0.5
    assert all(p["node"] == "2" and p["prompt_id"] == prompt_id for p in progress)
    types = [m["type"] for m in client.log.messages() if m["type"] in ("progress", "progress_state")]
    assert all(types[i - 1] == "progress_state" for i, t in enumerate(types) if t == "progress")


def test_each_of_several_clients_sees_only_its_own_prompt(comfyui_sim: SimulatorProcess) -> None:
    clients = [connected_client(comfyui_sim) for _ in range(4)]
    submitted = {c.client_id: c.submit(sleep_prompt(color=i, seconds=0.02)) for i, c in enumerate(clients)}
    for client in clients:
        client.wait_finished(submitted[client.client_id])
    for client in clients:
        started = {m["data"]["prompt_id"] for m in client.log.messages("execution_start")}
        assert started == {submitted[client.client_id]}


def test_saving_outside_the_output_folder_fails_the_node(comfyui_sim: SimulatorProcess) -> None:
    client = connected_client(comfyui_sim)
    prompt_id = client.submit(sleep_prompt(seconds=0.01, prefix="../escaped"))
    client.wait_finished(prompt_id)
    (error,) = client.log.messages("execution_error")
    assert (error["data"]["node_id"], error["data"]["exception_type"]) == ("3", "Exception")
    assert not (comfyui_sim.output_dir.parent / "escaped_00001_.png").exists()


def test_management_command_starts_the_simulator_with_its_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from django.core.management import call_command

    from devtools.management.commands import comfyui_sim as command

    started: list[Any] = []
    monkeypatch.setattr(command, "run", started.append)
    call_command(
        "comfyui_sim", "--port", "9123", "--host", "0.0.0.0", "--output-dir", str(tmp_path), "--models", "a.ckpt"
    )
    (options,) = started
    assert (options.host, options.port, options.output_dir, options.models) == ("0.0.0.0", 9123, tmp_path, ("a.ckpt",))


def test_sim_submissions_lists_every_post_including_resubmissions(comfyui_sim: SimulatorProcess) -> None:
    client = connected_client(comfyui_sim)
    chosen = "0e0e0e0e-1111-2222-3333-444444444444"
    client.submit({**sleep_prompt(color=1, seconds=0.01), "prompt_id": chosen})
    client.submit({**sleep_prompt(color=1, seconds=0.01), "prompt_id": chosen})
    client.http("POST", "/prompt", {"prompt": {}, "prompt_id": "rejected", "client_id": client.client_id})
    submissions = requests.get(comfyui_sim.url + "/sim/submissions", timeout=10).json()
    assert [(s["prompt_id"], s["accepted"], s["client_id"]) for s in submissions] == [
        (chosen, True, client.client_id),
        (chosen, True, client.client_id),
        ("rejected", False, client.client_id),
    ]
    # Not a ComfyUI route, so not served under /api either.
    assert requests.get(comfyui_sim.url + "/api/sim/submissions", timeout=10).status_code == 404
