"""Publishing workflow templates: who may, what is checked (the workflow as POST /api/jobs/ checks it,
every target, every default, the workflow with its defaults), versions numbered and immutable, and the
input schema as JSON Schema."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from tests.factories import UserFactory
from tests.template_workflows import KEYFRAME_INPUTS, KEYFRAME_WORKFLOW, publish, publish_body, publisher_user
from workflow_templates.models import TemplateVersion

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff() -> APIClient:
    client = APIClient()
    client.force_authenticate(publisher_user())
    return client


def refused(client: APIClient, **body: Any) -> dict[str, Any]:
    response = client.post("/api/templates/", publish_body(**body), format="json")
    assert response.status_code == 400, response.content
    assert not TemplateVersion.objects.exists(), "nothing is published from a refused request"
    return response.json()


def with_input(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {**copy.deepcopy(KEYFRAME_INPUTS), name: spec}


def test_staff_with_the_permission_publish_version_1_with_its_input_schema(staff: APIClient) -> None:
    body = publish(staff, description="keyframe to shot", notes="first cut")
    assert (body["name"], body["version"], body["latest_version"], body["job_type"]) == ("keyframe", 1, 1, "image")
    assert body["description"] == "keyframe to shot" and body["notes"] == "first cut"
    schema = body["input_schema"]
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == ["keyframe"] and schema["additionalProperties"] is False
    assert schema["properties"]["seed"] == {
        "x-kind": "int",
        "type": "integer",
        "minimum": 0,
        "maximum": 4294967295,
        "default": 0,
    }
    assert schema["properties"]["sampler"]["enum"] == ["euler", "dpmpp_2m"]
    assert schema["properties"]["prompt"]["maxLength"] == 200
    assert (
        schema["properties"]["keyframe"]["type"] == "string"
        and "image assets" in schema["properties"]["keyframe"]["description"]
    )
    assert body["workflow"] == KEYFRAME_WORKFLOW


@pytest.mark.parametrize("who", ["artist", "staff without the permission"])
def test_who_may_not_publish_gets_a_403(who: str) -> None:
    client = APIClient()
    client.force_authenticate(UserFactory.create(is_staff=who != "artist"))
    response = client.post("/api/templates/", publish_body(), format="json")
    assert response.status_code == 403
    assert not TemplateVersion.objects.exists()


def test_the_permission_without_staff_status_is_not_enough() -> None:
    user = UserFactory.create()
    user.user_permissions.add(Permission.objects.get(codename="add_workflowtemplate"))
    client = APIClient()
    client.force_authenticate(user)
    assert client.post("/api/templates/", publish_body(), format="json").status_code == 403


def test_a_second_publish_is_version_2_and_version_1_stays_as_it_was(staff: APIClient, api: APIClient) -> None:
    publish(staff)
    changed = copy.deepcopy(KEYFRAME_WORKFLOW)
    changed["5"]["inputs"]["scheduler"] = "karras"
    second = publish(staff, workflow=changed, inputs={k: v for k, v in KEYFRAME_INPUTS.items() if k != "cfg"})
    assert (second["version"], second["latest_version"]) == (2, 2)

    latest = api.get("/api/templates/keyframe/").json()
    first = api.get("/api/templates/keyframe/versions/1/").json()
    assert latest["version"] == 2 and latest["workflow"]["5"]["inputs"]["scheduler"] == "karras"
    assert first["version"] == 1 and first["workflow"] == KEYFRAME_WORKFLOW
    assert "cfg" in first["input_schema"]["properties"] and "cfg" not in latest["input_schema"]["properties"]
    assert [v["version"] for v in api.get("/api/templates/keyframe/versions/").json()] == [2, 1]
    assert api.get("/api/templates/keyframe/versions/3/").status_code == 404


def test_no_endpoint_changes_or_deletes_a_version(staff: APIClient) -> None:
    publish(staff)
    for method in ("put", "patch", "delete"):
        assert getattr(staff, method)("/api/templates/keyframe/", {}, format="json").status_code == 405
        assert getattr(staff, method)("/api/templates/keyframe/versions/1/", {}, format="json").status_code == 405


def test_templates_are_listed_for_anyone_signed_in_and_staff_only_ones_for_staff(
    staff: APIClient, api: APIClient
) -> None:
    publish(staff, name="open")
    publish(staff, name="internal", staff_only=True)
    assert [t["name"] for t in api.get("/api/templates/").json()] == ["open"]
    assert api.get("/api/templates/internal/").status_code == 404
    assert [t["name"] for t in staff.get("/api/templates/").json()] == ["internal", "open"]
    assert APIClient().get("/api/templates/").status_code in (401, 403)


@pytest.mark.parametrize(
    "body,where,reason",
    [
        ({"name": "Bad Name"}, "name", "lower-case"),
        ({"job_type": "hologram"}, "job_type", "unknown job type"),
        ({"workflow": {"nodes": [], "links": []}}, "workflow", "UI-format"),
        (
            {"workflow": {"1": {"class_type": "KSampler", "inputs": {"steps": 100000}}}, "inputs": {}},
            "workflow",
            "steps",
        ),
        ({"inputs": []}, "inputs", "must be an object"),
        ({"inputs": with_input("x", {"kind": "colour", "targets": [["5", "seed"]]})}, "x", "kind must be one of"),
        ({"inputs": with_input("Seed2", {"kind": "int", "targets": [["5", "seed"]]})}, "Seed2", "input name"),
        ({"inputs": with_input("x", {"kind": "int", "targets": []})}, "x", "targets must be a list"),
        (
            {"inputs": with_input("x", {"kind": "int", "targets": [["5", "seed"]], "choices": ["a"]})},
            "x",
            "unknown field",
        ),
        ({"inputs": with_input("x", {"kind": "int", "targets": [["99", "seed"]]})}, "x", "no node '99'"),
        ({"inputs": with_input("x", {"kind": "int", "targets": [["5", "sed"]]})}, "x", "has no input 'sed'"),
        ({"inputs": with_input("x", {"kind": "int", "targets": [["5", "model"]]})}, "x", "is linked to node 1"),
        (
            {"inputs": with_input("x", {"kind": "int", "targets": [["5", "seed"]]})},
            "x",
            "already set by the template input 'seed'",
        ),
        (
            {"inputs": with_input("x", {"kind": "int", "targets": [["4", "width"]], "min": 10, "max": 5})},
            "x",
            "above max",
        ),
        (
            {"inputs": with_input("x", {"kind": "int", "targets": [["4", "width"]], "max": 100, "default": 512})},
            "x",
            "default must be at most 100",
        ),
        (
            {"inputs": with_input("x", {"kind": "int", "targets": [["4", "width"]], "default": 1.5})},
            "x",
            "whole number",
        ),
        (
            {"inputs": with_input("x", {"kind": "float", "targets": [["5", "denoise"]], "min": "0"})},
            "x",
            "min must be a finite number",
        ),
        (
            {
                "inputs": with_input(
                    "x", {"kind": "text", "targets": [["3", "text"]], "max_length": 5, "default": "too long"}
                )
            },
            "x",
            "at most 5 characters",
        ),
        ({"inputs": with_input("x", {"kind": "text", "targets": [["3", "text"]], "max_length": 0})}, "x", "max_length"),
        (
            {"inputs": with_input("x", {"kind": "choice", "targets": [["5", "scheduler"]], "choices": []})},
            "x",
            "choices must be a list",
        ),
        (
            {
                "inputs": with_input(
                    "x", {"kind": "choice", "targets": [["5", "scheduler"]], "choices": ["normal"], "default": "karras"}
                )
            },
            "x",
            "must be one of normal",
        ),
        (
            {"inputs": with_input("x", {"kind": "bool", "targets": [["5", "denoise"]], "default": "yes"})},
            "x",
            "true or false",
        ),
        (
            {"inputs": with_input("x", {"kind": "image", "targets": [["3", "text"]], "default": "asset:1"})},
            "x",
            "has no default",
        ),
        (
            {"inputs": with_input("keyframe", {"kind": "audio", "targets": [["7", "image"]]})},
            "keyframe",
            "LoadImage reads image in 'image', not audio",
        ),
        ({"inputs": with_input("keyframe", {"kind": "text", "targets": [["7", "image"]]})}, "keyframe", "names a file"),
    ],
)
def test_a_bad_template_is_a_400_naming_what_is_wrong(
    staff: APIClient, body: dict[str, Any], where: str, reason: str
) -> None:
    errors = refused(staff, **body)
    text = str(errors.get(where) or errors.get("inputs", {}).get(where))
    assert reason in text, errors


def test_the_workflow_with_its_defaults_must_itself_be_valid(staff: APIClient) -> None:
    # Within the input's own bounds, but past the server's pixel bound (WORKFLOW_MAX_PIXELS).
    inputs = with_input("width", {"kind": "int", "targets": [["4", "width"]], "max": 100000, "default": 100000})
    inputs["height"] = {"kind": "int", "targets": [["4", "height"]], "default": 100000}
    errors = refused(staff, inputs=inputs)
    assert any("with the default inputs" in problem and "pixels" in problem for problem in errors["workflow"]), errors


def test_an_asset_of_the_publishers_in_the_workflow_itself_is_refused(staff: APIClient) -> None:
    workflow = copy.deepcopy(KEYFRAME_WORKFLOW)
    workflow["10"] = {"class_type": "LoadImage", "inputs": {"image": "asset:8d3e9ac0-8b1c-4a8e-9f54-2d1b0c5e7a11"}}
    workflow["11"] = {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "x"}}
    errors = refused(staff, workflow=workflow)
    assert any("node 10 (LoadImage)" in problem and "asset input" in problem for problem in errors["workflow"]), errors


def test_a_path_in_a_loader_input_not_set_by_the_template_is_refused(staff: APIClient) -> None:
    workflow = copy.deepcopy(KEYFRAME_WORKFLOW)
    workflow["10"] = {"class_type": "LoadImage", "inputs": {"image": "../../secrets.png"}}
    errors = refused(staff, workflow=workflow)
    assert any("is a path" in problem for problem in errors["workflow"]), errors


def test_publishing_can_mark_a_template_staff_only_and_describe_it_again(staff: APIClient) -> None:
    publish(staff, description="first")
    publish(staff, staff_only=True)
    body = staff.get("/api/templates/keyframe/").json()
    assert body["description"] == "first", "a publish without a description keeps the template's"
    assert body["staff_only"] is True
