"""Workflow templates for tests: a keyframe template (an image input, a prompt, a seed, steps, a sampler)
whose every node the ComfyUI simulator runs, and a sleep template to keep a GPU busy."""

from __future__ import annotations

import copy
from typing import Any

from django.contrib.auth.models import Permission, User
from rest_framework.test import APIClient

from tests.factories import UserFactory
from tests.workflows import text_to_image

# Sampled noise from the prompt and seed (KSampler), averaged with the keyframe (LoadImage), saved.
KEYFRAME_WORKFLOW: dict[str, Any] = {
    **text_to_image(
        ckpt="v1-5-pruned-emaonly.safetensors", prompt="a fox in the snow", negative="", width=64, height=48, seed=0
    ),
    "7": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
    "8": {"class_type": "TestVariadicAverage", "inputs": {"input1": ["6", 0], "input2": ["7", 0]}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "keyframe_template"}},
}
KEYFRAME_INPUTS: dict[str, Any] = {
    "keyframe": {"kind": "image", "targets": [["7", "image"]], "description": "the shot's keyframe"},
    "prompt": {"kind": "text", "targets": [["2", "text"]], "max_length": 200, "default": "a fox in the snow"},
    "seed": {"kind": "int", "targets": [["5", "seed"]], "min": 0, "max": 4294967295, "default": 0},
    "steps": {"kind": "int", "targets": [["5", "steps"]], "min": 1, "max": 30, "default": 4},
    "cfg": {"kind": "float", "targets": [["5", "cfg"]], "min": 1.0, "max": 20.0, "default": 7.0},
    "sampler": {
        "kind": "choice",
        "targets": [["5", "sampler_name"]],
        "choices": ["euler", "dpmpp_2m"],
        "default": "euler",
    },
}

# An image of a chosen colour, held for a chosen time: a GPU kept busy as long as a test needs.
SLEEP_TEMPLATE_WORKFLOW: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 0}},
    "2": {"class_type": "TestSleep", "inputs": {"value": ["1", 0], "seconds": 1.0}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "sleep_template"}},
}
SLEEP_TEMPLATE_INPUTS: dict[str, Any] = {
    "colour": {"kind": "int", "targets": [["1", "color"]], "min": 0, "max": 16777215, "default": 0},
    "seconds": {"kind": "float", "targets": [["2", "seconds"]], "min": 0.0, "max": 120.0, "default": 1.0},
}


def publisher_user() -> User:
    """Staff with the permission to add workflow templates: who may publish."""
    user = UserFactory.create(is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(codename="add_workflowtemplate", content_type__app_label="workflow_templates")
    )
    return user


def publish_body(
    name: str = "keyframe",
    workflow: dict[str, Any] | None = None,
    inputs: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "name": name,
        "job_type": "image",
        "workflow": copy.deepcopy(KEYFRAME_WORKFLOW if workflow is None else workflow),
        "inputs": copy.deepcopy(KEYFRAME_INPUTS if inputs is None else inputs),
        **extra,
    }


def publish(client: APIClient, **body: Any) -> dict[str, Any]:
    response = client.post("/api/templates/", publish_body(**body), format="json")
    assert response.status_code == 201, response.content
    return response.json()
