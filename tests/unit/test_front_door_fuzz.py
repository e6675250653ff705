"""Malformed input to the ComfyUI front door (comfy_api) and the project's other new endpoints is a 4xx
with the reason, never a 500: wrong types, huge numbers, unicode, NUL bytes, missing fields."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.factories import UserFactory, api_key_for
from tests.media_files import png

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("front_door_fleet")]

ODD_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    10**400,
    1.5,
    "",
    "x\x00y",
    "é✓🎞",
    "../../etc/passwd",
    "a" * 5000,
    [],
    ["a"],
    [1, 2],
    {},
    {"a": "b"},
    {"filename": ["x"]},
]


@pytest.fixture
def comfy() -> APIClient:
    client = APIClient(raise_request_exception=False)
    user: Any = UserFactory()
    client.credentials(HTTP_X_API_KEY=api_key_for(user))
    return client


def post_raw(client: APIClient, path: str, body: bytes | str) -> Any:
    return client.generic("POST", path, body, content_type="")  # type: ignore[arg-type]


def assert_refused_not_failed(response: Any, what: str) -> None:
    # 501 is the front door's deliberate "ComfyUI has this, this server does not do it".
    assert response.status_code < 500 or response.status_code == 501, (
        f"{what}: {response.status_code} {response.content[:300]!r}"
    )


@pytest.mark.parametrize("path", ["/comfy/prompt", "/comfy/queue", "/comfy/history", "/comfy/interrupt"])
@pytest.mark.parametrize(
    "body",
    [b"", b"\x00", b"\xff\xfe", b"[", b"nul", b"1e999999", b'"x"', b"[1]", b"null", b'{"\\u0000": 1}', b"9" * 5000],
)
def test_json_endpoints_refuse_bodies_that_are_not_their_object(comfy, path, body):
    assert_refused_not_failed(post_raw(comfy, path, body), f"{path} {body[:40]!r}")


@pytest.mark.parametrize("path", ["/comfy/prompt", "/comfy/queue", "/comfy/history", "/comfy/interrupt"])
@pytest.mark.parametrize(
    "key", ["prompt", "client_id", "prompt_id", "number", "front", "extra_data", "delete", "clear"]
)
@pytest.mark.parametrize("value", ODD_VALUES, ids=range(len(ODD_VALUES)))
def test_each_field_of_a_json_body_with_a_wrong_value(comfy, path, key, value):
    body = {"prompt": {"1": {"class_type": "SaveImage", "inputs": {}}}, key: value}
    assert_refused_not_failed(post_raw(comfy, path, json.dumps(body)), f"{path} {key}={value!r:.60}")


@pytest.mark.parametrize("field", ["class_type", "inputs", "_meta"])
@pytest.mark.parametrize("value", ODD_VALUES, ids=range(len(ODD_VALUES)))
def test_a_prompt_node_with_a_wrong_value(comfy, field, value):
    node: dict[str, Any] = {"class_type": "LoadImage", "inputs": {"image": "a.png"}, field: value}
    body = {"prompt": {"1": node, "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}}}
    assert_refused_not_failed(post_raw(comfy, "/comfy/prompt", json.dumps(body)), f"{field}={value!r:.60}")


@pytest.mark.parametrize("value", ODD_VALUES, ids=range(len(ODD_VALUES)))
def test_a_loader_input_with_a_wrong_value(comfy, value):
    body = {
        "prompt": {
            "1": {"class_type": "LoadImage", "inputs": {"image": value}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": value}},
        }
    }
    assert_refused_not_failed(post_raw(comfy, "/comfy/prompt", json.dumps(body)), f"{value!r:.60}")


QUERY_VALUES = ["", "x", "-1", "0", "99999999999999999999999", "1e3", "\x00", "é", "../..", "a/b", "..", "%00"]


@pytest.mark.parametrize("param", ["filename", "subfolder", "type", "channel", "preview"])
@pytest.mark.parametrize("value", QUERY_VALUES)
def test_view_with_odd_query_values(comfy, param, value):
    query = {"filename": "x.png", "subfolder": "00000000-0000-0000-0000-000000000000", "type": "output", param: value}
    assert_refused_not_failed(comfy.get("/comfy/view", query), f"{param}={value!r}")


@pytest.mark.parametrize("path", ["/comfy/history", "/comfy/api/history", "/history"])
@pytest.mark.parametrize("param", ["max_items", "offset"])
@pytest.mark.parametrize("value", QUERY_VALUES)
def test_history_paging_with_odd_query_values(comfy, path, param, value):
    assert_refused_not_failed(comfy.get(path, {param: value}), f"{path} {param}={value!r}")


@pytest.mark.parametrize(
    "path",
    [
        "/comfy/history/%00",
        "/comfy/history/" + "x" * 5000,
        "/comfy/history/é",
        "/comfy/object_info/%00",
        "/comfy/object_info/" + "x" * 5000,
        "/comfy/models/%00",
        "/comfy/models/..",
        "/comfy/view_metadata/x",
        "/comfy/%00",
    ],
)
def test_path_parameters_with_odd_values(comfy, path):
    assert_refused_not_failed(comfy.get(path), path)


@pytest.mark.parametrize("field", ["subfolder", "type", "overwrite"])
@pytest.mark.parametrize("value", ["", "x\x00y", "../..", "/abs", "..", "a" * 5000, "é✓", "a\\b", "."])
def test_an_upload_with_odd_form_values(comfy, field, value):
    from django.core.files.uploadedfile import SimpleUploadedFile

    image = SimpleUploadedFile("x.png", png(), content_type="image/png")
    response = comfy.post("/comfy/upload/image", {"image": image, field: value}, format="multipart")
    assert_refused_not_failed(response, f"{field}={value!r:.60}")


@pytest.mark.parametrize(
    "name", ["", ".", "..", "x\x00.png", "../x.png", "/etc/x.png", "a\\b.png", "é✓.png", "a" * 5000 + ".png"]
)
def test_an_upload_with_odd_file_names(comfy, name):
    # Written by hand: Django's own test client will not send such names.
    boundary = "fuzzboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    response = comfy.generic(
        "POST", "/comfy/upload/image", body, content_type=f"multipart/form-data; boundary={boundary}"
    )
    assert_refused_not_failed(response, f"name={name!r:.60}")
    if response.status_code == 200:
        stored = response.json()
        assert "/" not in stored["name"] and "\\" not in stored["name"] and stored["name"] not in ("", ".", "..")
        assert ".." not in stored["subfolder"].split("/")


@pytest.mark.parametrize(
    "value", [*ODD_VALUES, {"filename": "x.png", "type": ["input"]}, {"filename": "x.png", "type": {}}]
)
def test_a_mask_upload_with_an_odd_original_ref(comfy, value):
    from django.core.files.uploadedfile import SimpleUploadedFile

    mask = SimpleUploadedFile("m.png", png(), content_type="image/png")
    raw = json.dumps(value)
    response = comfy.post("/comfy/upload/mask", {"image": mask, "original_ref": raw}, format="multipart")
    assert_refused_not_failed(response, f"original_ref={raw[:60]}")


# --- the project's other new endpoints ---------------------------------------------------------


@pytest.fixture
def staff() -> APIClient:
    user: Any = UserFactory(is_staff=True, is_superuser=True)
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_X_API_KEY=api_key_for(user))
    return client


@pytest.mark.parametrize("path", ["/api/quotas/", "/api/quotas/me/"])
@pytest.mark.parametrize("param", ["page", "page_size", "ordering"])
@pytest.mark.parametrize("value", QUERY_VALUES)
def test_quota_pages_with_odd_query_values(staff, path, param, value):
    assert_refused_not_failed(staff.get(path, {param: value}), f"{path} {param}={value!r}")


@pytest.mark.parametrize("value", [*ODD_VALUES, ["video\n"], ["x"] * 17, ["\x00"], [None], [["a"]]])
def test_a_job_with_odd_required_labels(comfy, value):
    from tests.factories import SLEEP_WORKFLOW

    body = {"workflow": SLEEP_WORKFLOW, "requires": value}
    response = comfy.post("/api/jobs/", body, format="json")
    assert_refused_not_failed(response, f"requires={value!r:.60}")


@pytest.mark.parametrize(
    "authorization", ["", "Bearer", "Bearer ", "Bearer é", "Basic x", "bearer " + "x" * 10000, "Bearer \x00"]
)
def test_metrics_with_odd_credentials(settings, authorization):
    settings.METRICS_TOKEN = "s3cret-token"
    client = APIClient(raise_request_exception=False)
    response = client.get("/metrics", HTTP_AUTHORIZATION=authorization)
    assert response.status_code == 401, response.status_code


def test_a_prompt_of_more_nodes_than_the_limit_is_refused_before_its_names_are_looked_up(comfy, settings):
    # Each LoadImage name is a lookup of the caller's uploads: 40,000 of them were one query of 80,000
    # parameters (over PostgreSQL's 65,535 and SQLite's expression depth: a 500) before the node limit.
    prompt = {str(n): {"class_type": "LoadImage", "inputs": {"image": f"i{n}.png"}} for n in range(40_000)}
    response = post_raw(comfy, "/comfy/prompt", json.dumps({"prompt": prompt}))
    assert response.status_code == 400, response.content[:300]
    assert str(settings.WORKFLOW_MAX_NODES) in response.content.decode()


# --- the web editor's per-user state (comfy_api.views_editor) ------------------------------------

EDITOR_BODIES = [b"", b"\x00", b"\xff", b"[", b"null", b"[1]", b'"x"', b'{"a": NaN}', b'{"\\u0000": 1}', b"9" * 5000]


@pytest.mark.parametrize(
    "path",
    [
        "/comfy/settings",
        "/comfy/settings/Comfy.X",
        "/settings/%00",
        "/comfy/userdata/a.json",
    ],
)
@pytest.mark.parametrize("body", EDITOR_BODIES)
def test_editor_writes_with_odd_bodies(comfy, path, body):
    assert_refused_not_failed(post_raw(comfy, path, body), f"{path} {body[:40]!r}")


@pytest.mark.parametrize(
    "path",
    [
        "/comfy/userdata?dir=..",
        "/comfy/userdata?dir=%00",
        "/comfy/userdata?dir=/etc&recurse=true&split=x&full_info=1",
        "/comfy/userdata?dir=" + "a/" * 50,
        "/comfy/v2/userdata?path=..",
        "/comfy/v2/userdata?path=%00",
        "/comfy/userdata/..%2F..%2Fetc%2Fpasswd",
        "/comfy/userdata/%00",
        "/comfy/userdata/a%2F..%2Fb",
        "/comfy/userdata/" + "a" * 5000,
        "/comfy/settings/" + "a" * 5000,
        "/comfy/experiment/models/%00",
        "/comfy/experiment/models/..",
    ],
)
def test_editor_reads_with_odd_paths(comfy, path):
    assert_refused_not_failed(comfy.get(path), path)


@pytest.mark.parametrize(
    "path",
    [
        "/comfy/userdata/a.json/move/..%2Fb.json",
        "/comfy/userdata/%00/move/b.json",
        "/comfy/userdata/a.json/move/%00",
        "/comfy/userdata/..%2Fa.json",
        "/comfy/userdata/" + "a%2F" * 20 + "x.json",
    ],
)
def test_editor_saves_and_moves_with_odd_paths(comfy, path):
    response = post_raw(comfy, path, b"{}")
    assert_refused_not_failed(response, path)
    assert response.status_code != 200 or ".." not in response.content.decode()


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("path", ["/comfy/prompt", "/comfy/settings", "/comfy/settings/Comfy.X", "/comfy/queue"])
def test_json_numbers_that_json_cannot_store_are_refused_with_the_reason(comfy, path, constant):
    # Python's json reads them; JSON (a JSONField, PostgreSQL's jsonb, SQLite's JSON_VALID) cannot hold them.
    body = '{"prompt": {"1": {"class_type": "SaveImage", "inputs": {"x": VALUE}}}, "a": VALUE}'.replace(
        "VALUE", constant
    )
    response = post_raw(comfy, path, body)
    assert response.status_code == 400, response.content[:300]
    assert constant.lstrip("-") in response.content.decode()


def test_a_nul_in_a_name_is_refused_before_any_lookup(comfy):
    # PostgreSQL refuses NUL in text (a 500 there, while SQLite simply finds nothing): such names never
    # reach a query. The fuzz above runs on PostgreSQL with DATABASE_URL set.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    response = comfy.get("/comfy/view", {"filename": "a\x00.png", "subfolder": "00000000-0000-0000-0000-000000000000"})
    assert response.status_code == 400 and "control characters" in response.json()["error"]["message"]
    with CaptureQueriesContext(connection) as queries:
        response = comfy.get("/comfy/history/a%00b")
    assert response.status_code == 200 and response.json() == {}
    assert not [query for query in queries.captured_queries if "prompt_id" in query["sql"]]
