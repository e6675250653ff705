"""The simulator's input folder as ComfyUI 0.8 keeps it: `/upload/image` and `/upload/mask` (answer
shape, duplicates kept, collisions renamed, paths refused) and LoadImage / LoadImageMask reading
the uploaded file for real, or refusing a missing one with ComfyUI's "Invalid image file"."""

from __future__ import annotations

import io
import json
import time
import uuid
from typing import Any

import requests
from PIL import Image

from devtools.simulator_process import InProcessSimulator
from tests.media_files import png


def upload(sim: InProcessSimulator, data: bytes, filename: str, route: str = "image", **fields: str) -> Any:
    return requests.post(
        f"{sim.url}/upload/{route}", files={"image": (filename, data, "image/png")}, data=fields, timeout=10
    )


def run(sim: InProcessSimulator, prompt: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    prompt_id = str(uuid.uuid4())
    answer = requests.post(f"{sim.url}/prompt", json={"prompt": prompt, "prompt_id": prompt_id}, timeout=10)
    assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        history = requests.get(f"{sim.url}/history/{prompt_id}", timeout=5).json()
        if history:
            return prompt_id, history[prompt_id]
        time.sleep(0.05)
    raise AssertionError("the prompt did not finish")


def load_and_save(value: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": value}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "loaded"}},
    }


def test_an_upload_lands_in_its_subfolder_and_answers_comfyuis_shape(comfyui_sim: InProcessSimulator) -> None:
    answer = upload(comfyui_sim, png(3, 3), "a.png", type="input", subfolder="jobs/j1", overwrite="false")
    assert answer.status_code == 200
    assert answer.json() == {"name": "a.png", "subfolder": "jobs/j1", "type": "input"}
    stored = comfyui_sim.output_dir.parent / "input" / "jobs" / "j1" / "a.png"
    assert stored.read_bytes() == png(3, 3)
    # No type: the input folder, as in ComfyUI.
    assert upload(comfyui_sim, png(4, 4), "b.png").json() == {"name": "b.png", "subfolder": "", "type": "input"}


def test_same_bytes_keep_their_name_other_bytes_are_renamed_overwrite_replaces(comfyui_sim: InProcessSimulator) -> None:
    assert upload(comfyui_sim, png(3, 3), "a.png", subfolder="s").json()["name"] == "a.png"
    assert upload(comfyui_sim, png(3, 3), "a.png", subfolder="s").json()["name"] == "a.png"
    assert upload(comfyui_sim, png(5, 5), "a.png", subfolder="s").json()["name"] == "a (1).png"
    assert upload(comfyui_sim, png(6, 6), "a.png", subfolder="s").json()["name"] == "a (2).png"
    assert upload(comfyui_sim, png(7, 7), "a.png", subfolder="s", overwrite="true").json()["name"] == "a.png"
    folder = comfyui_sim.output_dir.parent / "input" / "s"
    assert sorted(p.name for p in folder.iterdir()) == ["a (1).png", "a (2).png", "a.png"]
    assert (folder / "a.png").read_bytes() == png(7, 7)
    uploads = requests.get(f"{comfyui_sim.url}/sim/uploads", timeout=5).json()
    assert [(u["name"], u["duplicate"]) for u in uploads] == [
        ("a.png", False),
        ("a.png", True),
        ("a (1).png", False),
        ("a (2).png", False),
        ("a.png", False),
    ]


def test_a_path_out_of_the_folder_is_a_400(comfyui_sim: InProcessSimulator) -> None:
    assert upload(comfyui_sim, png(3, 3), "x.png", subfolder="../../..").status_code == 400
    assert upload(comfyui_sim, png(3, 3), "../x.png").status_code == 400
    assert requests.post(f"{comfyui_sim.url}/upload/image", data={"type": "input"}, timeout=5).status_code == 400
    assert not (comfyui_sim.output_dir.parent.parent / "x.png").exists()


def test_load_image_reads_the_uploaded_file_and_what_it_saves_comes_from_it(comfyui_sim: InProcessSimulator) -> None:
    name = upload(comfyui_sim, png(37, 23, (12, 200, 77)), "key.png", subfolder="jobs/j2").json()["name"]
    prompt_id, history = run(comfyui_sim, load_and_save(f"jobs/j2/{name}"))
    assert history["status"]["status_str"] == "success"
    (saved,) = history["outputs"]["2"]["images"]
    image = Image.open(io.BytesIO(requests.get(f"{comfyui_sim.url}/view", params=saved, timeout=5).content))
    assert image.size == (37, 23) and image.getpixel((0, 0)) == (12, 200, 77)
    (read,) = requests.get(f"{comfyui_sim.url}/sim/input_reads", params={"prompt_id": prompt_id}, timeout=5).json()
    assert (read["node_id"], read["image"], read["width"], read["height"]) == ("1", "jobs/j2/key.png", 37, 23)


def test_a_missing_file_fails_validation_as_comfyui_does(comfyui_sim: InProcessSimulator) -> None:
    answer = requests.post(f"{comfyui_sim.url}/prompt", json={"prompt": load_and_save("jobs/none.png")}, timeout=5)
    assert answer.status_code == 400
    body = answer.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["node_errors"]["1"]["errors"] == [
        {
            "type": "custom_validation_failed",
            "message": "Custom validation failed for node",
            "details": "image - Invalid image file: jobs/none.png",
            "extra_info": {"input_name": "image"},
        }
    ]
    assert body["node_errors"]["1"]["dependent_outputs"] == ["2"]


def test_object_info_offers_the_top_level_images_of_the_input_folder(comfyui_sim: InProcessSimulator) -> None:
    upload(comfyui_sim, png(2, 2), "top.png")
    upload(comfyui_sim, png(2, 2), "deep.png", subfolder="sub")
    info = requests.get(f"{comfyui_sim.url}/object_info/LoadImage", timeout=5).json()["LoadImage"]
    assert info["input"]["required"]["image"] == [["top.png"], {"image_upload": True}]
    assert info["output"] == ["IMAGE", "MASK"] and info["display_name"] == "Load Image"


def test_upload_mask_puts_the_masks_alpha_on_the_original(comfyui_sim: InProcessSimulator) -> None:
    upload(comfyui_sim, png(4, 4, (255, 0, 0)), "base.png")
    mask = png(4, 4, (0, 0, 0, 64), mode="RGBA")
    original_ref = json.dumps({"filename": "base.png", "type": "input", "subfolder": ""})
    answer = upload(comfyui_sim, mask, "masked.png", route="mask", original_ref=original_ref)
    assert answer.json() == {"name": "masked.png", "subfolder": "", "type": "input"}
    masked = Image.open(comfyui_sim.output_dir.parent / "input" / "masked.png")
    assert masked.mode == "RGBA" and masked.getpixel((0, 0)) == (255, 0, 0, 64)
    prompt = {
        "1": {"class_type": "LoadImageMask", "inputs": {"image": "masked.png", "channel": "alpha"}},
        "2": {"class_type": "MaskToImage", "inputs": {"mask": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "mask"}},
    }
    _, history = run(comfyui_sim, prompt)
    (saved,) = history["outputs"]["3"]["images"]
    grey = Image.open(io.BytesIO(requests.get(f"{comfyui_sim.url}/view", params=saved, timeout=5).content))
    # ComfyUI's alpha mask is 1 where transparent: alpha 64 of 255 is a mask of 191/255.
    assert grey.size == (4, 4) and grey.getpixel((0, 0)) == (191, 191, 191)
    missing = {**prompt, "1": {"class_type": "LoadImageMask", "inputs": {"image": "gone.png", "channel": "red"}}}
    answer = requests.post(f"{comfyui_sim.url}/prompt", json={"prompt": missing}, timeout=5).json()
    assert answer["node_errors"]["1"]["errors"][0]["details"] == "image - Invalid image file: gone.png"
