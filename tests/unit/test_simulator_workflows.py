"""Image and video workflows on the simulator: sampler steps, previews, saved files, caching."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from devtools.simulator_process import SimulatorClient, SimulatorProcess
from tests.workflows import text_to_image

STEP_SECONDS = 0.01


@pytest.fixture
def fast_sim(comfyui_sim: SimulatorProcess) -> SimulatorProcess:
    """The simulator with short sampler steps."""
    comfyui_sim.extra_args = ["--step-seconds", str(STEP_SECONDS)]
    comfyui_sim.restart()
    return comfyui_sim


def run(sim: SimulatorProcess, prompt: dict[str, Any], preview_metadata: bool = False) -> SimulatorClient:
    client = SimulatorClient(sim)
    client.connect()
    if preview_metadata:
        client.negotiate_preview_metadata()
    prompt_id = client.submit({"prompt": prompt})
    client.wait_finished(prompt_id)
    client.finish()
    return client


def fetch(sim: SimulatorProcess, image: dict[str, str]) -> bytes:
    response = requests.get(sim.url + "/view", params=image, timeout=10)
    assert response.status_code == 200
    return response.content


def test_ksampler_reports_each_step_with_a_preview(fast_sim: SimulatorProcess) -> None:
    client = run(fast_sim, text_to_image(steps=6))
    progress = [m["data"] for m in client.log.messages("progress") if m["data"]["node"] == "5"]
    assert [(p["value"], p["max"]) for p in progress] == [(step, 6) for step in range(1, 7)]
    frames = [e for e in client.log.events if e["kind"] == "ws_binary"]
    assert [(f["event_type"], f["image_type"]) for f in frames] == [(1, 1)] * 6
    executing = [m["data"]["node"] for m in client.log.messages("executing")]
    assert executing == ["1", "4", "3", "2", "5", "6", "7", None]


def test_ksampler_previews_carry_metadata_when_negotiated(fast_sim: SimulatorProcess) -> None:
    client = run(fast_sim, text_to_image(steps=3), preview_metadata=True)
    frames = [e for e in client.log.events if e["kind"] == "ws_binary"]
    assert [f["event_type"] for f in frames] == [4, 4, 4]
    assert {f["metadata"]["node_id"] for f in frames} == {"5"}
    assert all(f["metadata"]["image_type"] == "image/jpeg" for f in frames)


def test_preview_method_none_sends_no_frames(comfyui_sim: SimulatorProcess) -> None:
    comfyui_sim.extra_args = ["--step-seconds", str(STEP_SECONDS), "--preview-method", "none"]
    comfyui_sim.restart()
    client = run(comfyui_sim, text_to_image(steps=3))
    assert [e for e in client.log.events if e["kind"] == "ws_binary"] == []
    assert len([m for m in client.log.messages("progress") if m["data"]["node"] == "5"]) == 3


def test_text_to_image_saves_one_png_per_batch_item(fast_sim: SimulatorProcess) -> None:
    client = run(fast_sim, text_to_image(steps=2, batch_size=3))
    (executed,) = client.log.messages("executed")
    images = executed["data"]["output"]["images"]
    assert [i["filename"] for i in images] == ["t2i_00001_.png", "t2i_00002_.png", "t2i_00003_.png"]
    for image in images:
        png = Image.open(io.BytesIO(fetch(fast_sim, image)))
        assert (png.format, png.size) == ("PNG", (96, 64))
        assert Path(fast_sim.output_dir, image["filename"]).is_file()


def test_video_workflow_writes_a_real_animated_webp(fast_sim: SimulatorProcess) -> None:
    saver = {
        "class_type": "SaveAnimatedWEBP",
        "inputs": {"images": ["6", 0], "filename_prefix": "clip", "fps": 8.0, "lossless": False, "quality": 80,
                   "method": "default"},
    }  # fmt: skip
    client = run(fast_sim, text_to_image(steps=2, batch_size=5, save=saver))
    (executed,) = client.log.messages("executed")
    output = executed["data"]["output"]
    assert output["animated"] == [True]
    (image,) = output["images"]
    assert image == {"filename": "clip_00001_.webp", "subfolder": "", "type": "output"}
    webp = Image.open(io.BytesIO(fetch(fast_sim, image)))
    assert (webp.format, webp.size, getattr(webp, "n_frames", 1)) == ("WEBP", (96, 64), 5)
    job = requests.get(f"{fast_sim.url}/api/jobs/{executed['data']['prompt_id']}", timeout=10).json()
    assert job["outputs_count"] == 1 and job["preview_output"]["filename"] == "clip_00001_.webp"


def test_loading_a_checkpoint_shows_in_vram_until_freed(fast_sim: SimulatorProcess) -> None:
    def device() -> dict[str, int]:
        return requests.get(fast_sim.url + "/system_stats", timeout=10).json()["devices"][0]

    idle = device()
    run(fast_sim, text_to_image(steps=1))
    loaded = device()
    assert loaded["torch_vram_total"] > idle["torch_vram_total"] == 0
    assert loaded["vram_free"] < idle["vram_free"]
    assert requests.post(fast_sim.url + "/free", json={"unload_models": True}, timeout=10).status_code == 200
    assert device() == idle


def test_identical_prompt_is_served_from_cache(fast_sim: SimulatorProcess) -> None:
    first = run(fast_sim, text_to_image(steps=2))
    again = run(fast_sim, text_to_image(steps=2))
    (cached,) = again.log.messages("execution_cached")
    assert cached["data"]["nodes"] == ["1", "2", "3", "4", "5", "6", "7"]
    assert [m["data"]["node"] for m in again.log.messages("executing")] == [None]
    assert again.log.messages("progress") == []
    assert again.log.messages("executed")[0]["data"]["output"] == first.log.messages("executed")[0]["data"]["output"]


def test_changed_input_reruns_only_what_depends_on_it(fast_sim: SimulatorProcess) -> None:
    run(fast_sim, text_to_image(steps=2, seed=1))
    changed = run(fast_sim, text_to_image(steps=2, seed=2))
    (cached,) = changed.log.messages("execution_cached")
    assert cached["data"]["nodes"] == ["1", "2", "3", "4"]
    assert [m["data"]["node"] for m in changed.log.messages("executing")] == ["5", "6", "7", None]


def test_cache_keeps_only_the_previous_prompt(fast_sim: SimulatorProcess) -> None:
    # ComfyUI's classic cache drops every entry the new prompt does not use: A, B, A reruns A.
    run(fast_sim, text_to_image(steps=1, seed=1))
    run(fast_sim, text_to_image(steps=1, seed=2))
    third = run(fast_sim, text_to_image(steps=1, seed=1))
    (cached,) = third.log.messages("execution_cached")
    assert cached["data"]["nodes"] == ["1", "2", "3", "4"]
    assert "5" in [m["data"]["node"] for m in third.log.messages("executing")]


def test_failed_node_error_lists_its_inputs_like_torch(comfyui_sim: SimulatorProcess) -> None:
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ProbeRaiseOOM", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
    }
    client = run(comfyui_sim, prompt)
    (error,) = client.log.messages("execution_error")
    data = error["data"]
    assert data["exception_type"] == "torch.OutOfMemoryError"
    assert data["exception_message"].endswith("accidentally set the batch_size to a large number.")
    assert data["current_inputs"]["value"][0].startswith("tensor([[[[0., 0., 0.],\n          [0., 0., 0.],")
    assert sorted(data["current_outputs"]) == ["1", "2", "3"]
    assert all(isinstance(line, str) for line in data["traceback"]) and data["traceback"]
