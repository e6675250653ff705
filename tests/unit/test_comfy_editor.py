"""The ComfyUI web editor on the project (comfy_api.editor, comfy_api.views_editor): its page and
files only to a logged-in user, and what it asks besides running prompts (settings, saved
workflows, the single-user answer) per user, in ComfyUI's shapes, with every name and size checked."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from comfy_api import editor_files
from comfy_api.editor import STATIC_ROOT
from comfy_api.fleet_info import fleet_info_forget
from comfy_api.models import EditorFile
from tests.factories import UserFactory, keyed_client

PASSWORD = "pw-for-tests"  # tests.factories.UserFactory's

pytestmark = pytest.mark.django_db

WORKFLOW = {"last_node_id": 1, "nodes": [{"id": 1, "type": "SaveImage"}], "links": [], "version": 0.4}


keyed = keyed_client


@pytest.fixture
def artist() -> Any:
    return UserFactory()


@pytest.fixture
def comfy(artist: Any) -> APIClient:
    return keyed(artist)


def save(client: APIClient, path: str, body: str, query: str = "") -> Any:
    return client.generic("POST", f"/comfy/api/userdata/{path}{query}", body, content_type="application/json")


def test_an_artist_who_is_not_staff_logs_in_and_gets_the_editor():
    artist = UserFactory.create(is_staff=False)  # password: PASSWORD (tests.factories)
    browser = Client()
    assert browser.get("/comfy/")["Location"] == "/accounts/login/?next=/comfy/"
    assert browser.get("/admin/login/?next=/comfy/").status_code == 200  # (the admin's would refuse them)

    wrong = browser.post("/accounts/login/?next=/comfy/", {"username": artist.username, "password": "nope"})
    assert wrong.status_code == 200 and browser.get("/comfy/").status_code == 302
    answer = browser.post("/accounts/login/?next=/comfy/", {"username": artist.username, "password": PASSWORD})
    assert answer.status_code == 302 and answer["Location"] == "/comfy/"
    assert browser.get("/comfy/").status_code == 200
    assert browser.get("/admin/").status_code == 302, "the editor's login gives no admin"


def test_the_login_sends_nobody_to_another_site():
    artist = UserFactory.create(is_staff=False)  # password: PASSWORD (tests.factories)
    answer = Client().post(
        "/accounts/login/?next=https://evil.example/", {"username": artist.username, "password": PASSWORD}
    )
    assert answer.status_code == 302 and not answer["Location"].startswith("https://evil.example")


def test_the_page_and_its_files_only_to_a_logged_in_user(artist):
    browser = Client()
    response = browser.get("/comfy/")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/?next=/comfy/"
    script = next(STATIC_ROOT.glob("assets/index-*.js")).name
    assert browser.get(f"/comfy/assets/{script}").status_code == 403

    browser.force_login(artist)
    page = browser.get("/comfy/")
    html = page.content.decode()
    assert page.status_code == 200 and page["Content-Type"].startswith("text/html")
    assert '<div id="vue-app">' in html and html.index("X-CSRFToken") < html.index('<script type="module"')
    asset = browser.get(f"/comfy/assets/{script}")
    assert asset.status_code == 200 and asset["Content-Type"] == "text/javascript"
    assert "immutable" in asset["Cache-Control"]
    assert asset.getvalue() == (STATIC_ROOT / "assets" / script).read_bytes()
    css = browser.get("/comfy/materialdesignicons.min.css")
    assert css["Content-Type"] == "text/css" and "no-cache" in css["Cache-Control"]
    again = browser.get(f"/comfy/assets/{script}", HTTP_IF_MODIFIED_SINCE=asset["Last-Modified"])
    assert again.status_code == 304
    for outside in ("assets/../../__init__.py", "assets/%2e%2e/%2e%2e/__init__.py", "assets/nothing.js"):
        assert browser.get(f"/comfy/{outside}").status_code == 404, outside


def test_settings_are_per_user_json_with_comfyuis_answers(comfy, artist):
    assert comfy.get("/comfy/api/settings").json() == {}
    assert comfy.generic("POST", "/comfy/api/settings", json.dumps({"Comfy.Locale": "en", "a": 1})).status_code == 200
    assert comfy.generic("POST", "/comfy/api/settings/Comfy.Locale", json.dumps("fr")).status_code == 200
    assert comfy.get("/comfy/api/settings").json() == {"Comfy.Locale": "fr", "a": 1}
    assert comfy.get("/comfy/api/settings/Comfy.Locale").json() == "fr"
    assert comfy.get("/comfy/api/settings/unknown").json() is None
    assert keyed(UserFactory()).get("/comfy/api/settings").json() == {}, "another user's settings are their own"

    assert comfy.generic("POST", "/comfy/api/settings", "[1]").status_code == 400
    assert comfy.generic("POST", "/comfy/api/settings", "{nope").status_code == 400
    big = json.dumps({"x": "y" * editor_files.EDITOR_SETTINGS_MAX_BYTES})
    response = comfy.generic("POST", "/comfy/api/settings", big)
    assert response.status_code == 400 and "larger than" in response.json()["error"]["message"]
    assert comfy.get("/comfy/api/settings/Comfy.Locale").json() == "fr", "a refused change loses nothing"


def test_the_single_user_answer_so_the_editor_asks_for_no_user(comfy):
    assert comfy.get("/comfy/api/users").json() == {"storage": "server", "migrated": True}
    assert Client().get("/comfy/api/users").status_code in (401, 403)


def test_saved_workflows_per_user_as_comfyuis_userdata(comfy, artist):
    body = json.dumps(WORKFLOW)
    assert comfy.get("/comfy/api/userdata", {"dir": "workflows"}).status_code == 404  # ComfyUI: no folder yet
    info = save(comfy, "workflows%2Fshot%20010.json", body, "?overwrite=false&full_info=true").json()
    assert info["path"] == "workflows/shot 010.json" and info["size"] == len(body.encode())
    assert save(comfy, "workflows%2Fshot%20010.json", "{}", "?overwrite=false").status_code == 409
    assert comfy.get("/comfy/api/userdata/workflows%2Fshot%20010.json").content == body.encode()

    listing = comfy.get(
        "/comfy/api/userdata", {"dir": "workflows", "recurse": "true", "split": "false", "full_info": "true"}
    )
    assert [entry["path"] for entry in listing.json()] == ["shot 010.json"]
    assert isinstance(listing.json()[0]["modified"], float)
    assert comfy.get("/comfy/api/userdata", {"dir": "workflows", "split": "false"}).json() == ["shot 010.json"]
    assert comfy.get("/comfy/api/v2/userdata", {"path": ""}).json() == [
        {"name": "workflows", "path": "workflows", "type": "directory"}
    ]

    other = keyed(UserFactory())
    assert other.get("/comfy/api/userdata/workflows%2Fshot%20010.json").status_code == 404
    assert other.get("/comfy/api/userdata", {"dir": "workflows"}).status_code == 404

    moved = comfy.post(
        "/comfy/api/userdata/workflows%2Fshot%20010.json/move/workflows%2Fshot%20020.json?full_info=true"
    )
    assert moved.status_code == 200 and moved.json()["path"] == "workflows/shot 020.json"
    assert comfy.get("/comfy/api/userdata/workflows%2Fshot%20010.json").status_code == 404
    assert comfy.delete("/comfy/api/userdata/workflows%2Fshot%20020.json").status_code == 204
    assert not EditorFile.objects.filter(user=artist).exists()


@pytest.mark.parametrize(
    "path",
    [
        "..%2F..%2Fetc%2Fpasswd",
        "workflows%2F..%2Fx.json",
        "%2Fabs.json",
        "a%5Cb.json",
        "workflows%2F%2Fx.json",
        "x" * 300,
    ],
)
def test_file_names_are_checked(comfy, path):
    response = save(comfy, path, "{}")
    assert response.status_code in (400, 404), response.content  # 404: the URL itself did not resolve
    assert not EditorFile.objects.exists()


def test_file_size_and_count_are_bounded(comfy, monkeypatch):
    too_big = "x" * (editor_files.EDITOR_FILE_MAX_BYTES + 1)
    response = save(comfy, "workflows%2Fbig.json", too_big)
    assert response.status_code == 400 and "larger than" in response.json()["error"]["message"]
    monkeypatch.setattr(editor_files, "EDITOR_FILES_MAX_PER_USER", 2)
    assert save(comfy, "workflows%2Fa.json", "{}").status_code == 200
    assert save(comfy, "workflows%2Fb.json", "{}").status_code == 200
    third = save(comfy, "workflows%2Fc.json", "{}")
    assert third.status_code == 400 and "delete some first" in third.json()["error"]["message"]
    assert save(comfy, "workflows%2Fa.json", "[1]").status_code == 200, "overwriting is not a new file"


def test_what_the_editor_reads_on_load_answers_in_comfyuis_shapes(comfy, settings, comfyui_sim):
    settings.COMFYUI_BACKENDS = {"default": comfyui_sim.url}
    fleet_info_forget()
    for path in ("/comfy/api/i18n", "/comfy/api/workflow_templates", "/comfy/api/global_subgraphs"):
        assert comfy.get(path).json() == {}, path
    assert comfy.get("/comfy/api/extensions").json() == []
    folders = comfy.get("/comfy/api/models").json()
    assert folders and [entry["name"] for entry in comfy.get("/comfy/api/experiment/models").json()] == folders
    files = comfy.get(f"/comfy/api/models/{folders[0]}").json()
    assert comfy.get(f"/comfy/api/experiment/models/{folders[0]}").json() == [
        {"name": n, "pathIndex": 0} for n in files
    ]
    assert comfy.get("/comfy/api/experiment/models/nothing").status_code == 404
    assert comfy.get("/comfy/api/internal/logs").status_code == 501


def test_the_editors_session_posts_with_the_pages_csrf_token(artist, settings, comfyui_sim):
    """As the editor posts: the session, the token the page carries, any Content-Type or none."""
    settings.COMFYUI_BACKENDS = {"default": comfyui_sim.url}
    fleet_info_forget()
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(artist)
    page = browser.get("/comfy/").content.decode()
    token = json.loads(page.split("var token = ", 1)[1].split(",", 1)[0])

    def post(path: str, body: str, content_type: str = "text/plain;charset=UTF-8", csrf: str = "") -> Any:
        headers = {"X-CSRFToken": csrf} if csrf else {}
        return browser.generic("POST", path, body, content_type=content_type, headers=headers)

    assert post("/comfy/api/settings/Comfy.Locale", '"en"').status_code == 403, "no token: refused"
    assert post("/comfy/api/settings/Comfy.Locale", '"en"', csrf=token).status_code == 200
    assert browser.get("/comfy/api/settings").json() == {"Comfy.Locale": "en"}
    saved = post("/comfy/api/userdata/workflows%2Fa.json", "{}", "application/json", csrf=token)
    assert saved.status_code == 200 and saved.json() == "workflows/a.json"
    from tests.factories import SLEEP_WORKFLOW

    body = json.dumps({"prompt": SLEEP_WORKFLOW, "client_id": "editor-tab"})
    queued = post("/comfy/api/prompt", body, "application/json", csrf=token)
    assert queued.status_code == 200, queued.content
    assert browser.get("/comfy/api/queue").json()["queue_pending"][0][1] == queued.json()["prompt_id"]
    assert browser.get("/comfy/templates/index.json").json() == []


def test_a_save_named_like_a_move_is_told_apart_by_the_servers_raw_path():
    """ASGI servers (daphne, uvicorn) keep the encoded path: workflows%2Fmove%2Fx.json is one name."""
    from django.test import RequestFactory
    from rest_framework.request import Request

    from comfy_api.views_editor import _move_of

    request = RequestFactory().post("/comfy/api/userdata/workflows/move/x.json")
    request.scope = {"raw_path": b"/comfy/api/userdata/workflows%2Fmove%2Fx.json"}  # type: ignore[attr-defined]
    assert _move_of(Request(request), "workflows/move/x.json") is None
    request.scope = {"raw_path": b"/comfy/api/userdata/workflows%2Fa.json/move/workflows%2Fb.json"}  # type: ignore[attr-defined]
    assert _move_of(Request(request), "workflows/a.json/move/workflows/b.json") == (
        "workflows/a.json",
        "workflows/b.json",
    )
