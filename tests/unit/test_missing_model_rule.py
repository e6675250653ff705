"""missing_model is what ComfyUI says about model files, not any input whose name ends in `_name`."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest

from jobs.failures import failure_from_rejection
from tests.conftest import load_trace
from tests.workflows import text_to_image

SAMPLERS = ["euler", "euler_ancestral", "dpmpp_2m", "ddim"]
# The standard SD graph, as the simulator knows it (its checkpoint list holds sd_xl_base_1.0).
TEXT_TO_IMAGE: dict[str, Any] = text_to_image()


def rejection(input_name: str, value: Any, offered: list[str] | None, class_type: str = "KSampler") -> dict:
    """A 400 answer of ComfyUI's for one value not in an input's list (its exact shape)."""
    listed = offered if offered is not None else "(list of length 400)"
    return {
        "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation"},
        "node_errors": {
            "4": {
                "errors": [
                    {
                        "type": "value_not_in_list",
                        "message": "Value not in list",
                        "details": f"{input_name}: '{value}' not in {listed}",
                        "extra_info": {
                            "input_name": input_name,
                            "input_config": None if offered is None else [offered, {}],
                            "received_value": value,
                        },
                    }
                ],
                "dependent_outputs": ["9"],
                "class_type": class_type,
            }
        },
    }


def test_recorded_missing_checkpoint_is_missing_model():
    (body,) = [e["response"] for e in load_trace("missing_model.jsonl") if e["kind"] == "http" and e["status"] == 400]
    assert failure_from_rejection(body, "x").category == "missing_model"


@pytest.mark.parametrize(
    ("input_name", "value", "offered"),
    [
        ("sampler_name", "eulerx", SAMPLERS),
        ("scheduler", "karras2", ["normal", "karras", "exponential"]),
        ("image", "missing.png", ["a.png", "b.png"]),  # LoadImage: an input image, not a model
        ("font_name", "Comic.ttf", ["Arial.ttf"]),  # a custom node's *_name that lists no models
    ],
)
def test_a_bad_choice_that_is_no_model_is_a_validation_error(input_name, value, offered):
    assert failure_from_rejection(rejection(input_name, value, offered), "x").category == "validation"


@pytest.mark.parametrize(
    ("input_name", "value", "offered", "class_type"),
    [
        ("ckpt_name", "anime_v3", None, "CheckpointLoaderSimple"),  # no extension, list too long to echo
        ("lora_name", "style.safetensors", ["other.safetensors"], "LoraLoader"),
        ("control_net_name", "canny.pth", [], "ControlNetLoader"),
        ("upscale_model_name", "4x.pth", None, "UpscaleModelLoaderX"),
        ("clip_name2", "t5xxl.safetensors", ["clip_l.safetensors"], "DualCLIPLoader"),
        ("unet_name", "flux-dev.gguf", None, "UnetLoaderGGUF"),
        # A custom loader whose input name nobody knows: the file names say it.
        ("weights", "motion.ckpt", None, "AnimateDiffLoader"),
        ("adapter", "ip.bin", ["ip-adapter_sd15.safetensors"], "IPAdapterLoader"),
    ],
)
def test_a_model_file_missing_from_its_list_is_missing_model(input_name, value, offered, class_type):
    body = rejection(input_name, value, offered, class_type)
    assert failure_from_rejection(body, "x").category == "missing_model"


def test_node_errors_of_unforeseen_shapes_are_a_validation_error():
    for node_errors in ({"4": {"errors": "text"}}, {"4": ["x"]}, ["x"], {"4": {"errors": [1, None, {"type": 3}]}}):
        body = {"error": {"type": "prompt_outputs_failed_validation"}, "node_errors": node_errors}
        assert failure_from_rejection(body, "x").category == "validation"


@pytest.mark.parametrize(
    ("node_id", "input_name", "value", "category"),
    [
        ("5", "sampler_name", "eulerx", "validation"),
        ("5", "scheduler", "karras2", "validation"),
        ("1", "ckpt_name", "anime_v9.safetensors", "missing_model"),
    ],
)
def test_the_simulators_rejections_are_classified_by_what_they_name(comfyui_sim, node_id, input_name, value, category):
    """The rejection as the ComfyUI simulator (checked against recorded ComfyUI traffic) sends it."""
    from comfyui import ComfyUIClient, ComfyUIError

    workflow = copy.deepcopy(TEXT_TO_IMAGE)
    workflow[node_id]["inputs"][input_name] = value
    with pytest.raises(ComfyUIError) as rejected:
        ComfyUIClient(comfyui_sim.url).submit(workflow, prompt_id=str(uuid.uuid4()), client_id="rule-test")
    (item,) = [e for ne in rejected.value.body["node_errors"].values() for e in ne["errors"]]
    assert item["type"] == "value_not_in_list" and item["extra_info"]["input_name"] == input_name
    assert failure_from_rejection(rejected.value.body, str(rejected.value)).category == category
