"""The Python client as a pipeline script uses it: `--input` targets and loader inputs, the UI-format
refusal, uploads as assets, downloads that stay in their folder, and following a job over the
websocket (snapshot, updates, a reconnect that asks for what it missed, polling when it cannot).

A scripted transport stands in for a server where the point is what the client does with an
answer no real server of ours gives (a file name with a path in it) or one that does not exist yet.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from anime_client import Client, DownloadRefused, WaitTimeout, WorkflowError
from anime_client.errors import flatten_reason, retry_after_seconds
from anime_client.terminal_text import one_line
from anime_client.workflow import checked_api_format, input_bindings, parse_input_flag

BASE = "http://studio.test:8000"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32

LOADERS = {
    "10": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
    "12": {"class_type": "LoadImage", "inputs": {"image": "example.png", "upload": "image"}},
    "13": {"class_type": "VHS_LoadVideo", "inputs": {"video": "clip.mp4", "force_rate": 0, "format": "AnimateDiff"}},
    "14": {"class_type": "LoadImageMask", "inputs": {"image": "mask.png [input]", "channel": "alpha"}},
    "15": {"class_type": "LoadAudio", "inputs": {"audio": "take3.wav"}},
    "16": {"class_type": "CustomLoader", "inputs": {"first": "a.png", "second": "b.png"}},
    "20": {"class_type": "SaveImage", "inputs": {"images": ["12", 0], "filename_prefix": "shot"}},
}


Handler = Callable[[requests.PreparedRequest], tuple[int, Mapping[str, str], bytes]]


class ScriptedServer(BaseAdapter):
    """Answers each (method, path) with its handler; records every request."""

    def __init__(self, routes: Mapping[tuple[str, str], Handler]) -> None:
        super().__init__()
        self.routes = dict(routes)
        self.sent: list[requests.PreparedRequest] = []

    def send(  # type: ignore[override]  # a fake transport takes requests' keyword arguments and ignores them
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        self.sent.append(request)
        path = request.path_url.split("?")[0]
        handler = self.routes.get((str(request.method), path))
        status, headers, body = handler(request) if handler else (404, {"Content-Type": "text/html"}, b"<h1>404</h1>")
        response = requests.Response()
        response.status_code = status
        response.headers = CaseInsensitiveDict(headers)
        response.raw = io.BytesIO(body)
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass


def json_answer(status: int, body: Any) -> Handler:
    return lambda request: (status, {"Content-Type": "application/json"}, json.dumps(body).encode())


def client_for(server: ScriptedServer, **kwargs: Any) -> Client:
    session = requests.Session()
    session.mount(BASE, server)
    return Client(BASE, "key-123", session=session, **kwargs)


def job(version: int, status: str = "running", **extra: Any) -> dict[str, Any]:
    return {
        "id": "j1",
        "status": status,
        "version": version,
        "seq": version,
        "progress_percent": 10.0 * version,
    } | extra


# --- --input targets and loader inputs ------------------------------------------------------------


@pytest.mark.parametrize(
    "flag,target,file",
    [
        ("12=keyframe.png", "12", "keyframe.png"),
        ("12.image=shots/kf 01.png", "12.image", "shots/kf 01.png"),
        (" 13 = clip=final.mp4", "13", "clip=final.mp4"),
    ],
)
def test_input_flags_parse_into_a_target_and_a_file(flag, target, file):
    assert parse_input_flag(flag) == (target, Path(file))


@pytest.mark.parametrize("flag", ["12", "=x.png", "12=", ""])
def test_an_input_flag_without_a_target_or_file_is_refused(flag):
    with pytest.raises(WorkflowError, match=r"expected NODE=FILE or NODE\.INPUT=FILE"):
        parse_input_flag(flag)


@pytest.mark.parametrize(
    "target,node,input_name",
    [
        ("12", "12", "image"),  # not "upload": "image" is no file name
        ("13", "13", "video"),
        ("14", "14", "image"),  # ComfyUI's annotated name
        ("15", "15", "audio"),
        ("16.second", "16", "second"),
        ("10", "10", "ckpt_name"),  # any input holding a file name, when it is the only one
    ],
)
def test_a_node_target_picks_its_loader_input(tmp_path, target, node, input_name):
    (tmp_path / "f").write_bytes(PNG)
    (binding,) = input_bindings(LOADERS, {target: tmp_path / "f"})
    assert (binding.node_id, binding.input_name) == (node, input_name)


def test_a_node_with_several_file_inputs_must_be_named(tmp_path):
    (tmp_path / "f").write_bytes(PNG)
    with pytest.raises(WorkflowError, match=r"several file-name inputs \(first, second\); name one: --input 16.first="):
        input_bindings(LOADERS, {"16": tmp_path / "f"})


def test_one_input_given_two_files_is_refused(tmp_path):
    (tmp_path / "f").write_bytes(PNG)
    with pytest.raises(WorkflowError, match="node 12 input 'image' is given two files"):
        input_bindings(LOADERS, {"12": tmp_path / "f", "12.image": tmp_path / "f"})


def test_node_ids_with_dots_are_matched_whole_first(tmp_path):
    (tmp_path / "f").write_bytes(PNG)
    workflow = {"4.1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}}}
    assert input_bindings(workflow, {"4.1": tmp_path / "f"})[0].node_id == "4.1"
    assert input_bindings(workflow, {"4.1.image": tmp_path / "f"})[0].input_name == "image"


def test_the_ui_format_is_refused_whatever_else_it_holds():
    ui = {"id": "x", "revision": 0, "last_node_id": 9, "nodes": [], "links": [], "groups": [], "version": 0.4}
    with pytest.raises(WorkflowError) as refused:
        checked_api_format(ui, "storyboard.json")
    assert "UI format" in str(refused.value) and "Export (API)" in str(refused.value)


def test_a_ui_format_mapping_is_refused_by_submit_before_any_request():
    server = ScriptedServer({})
    with pytest.raises(WorkflowError, match="UI format"):
        client_for(server).submit({"nodes": [], "links": []})
    assert server.sent == []


# --- assets ---------------------------------------------------------------------------------------


def test_submit_uploads_each_file_once_and_points_the_loaders_at_the_assets(tmp_path):
    keyframe = tmp_path / "keyframe.png"
    keyframe.write_bytes(PNG)
    uploads: list[bytes] = []

    def upload(request: requests.PreparedRequest) -> tuple[int, Mapping[str, str], bytes]:
        uploads.append(request.body if isinstance(request.body, bytes) else b"")
        status = 201 if len(uploads) == 1 else 200
        body = {"id": "7d0c1a9e-0000-4000-8000-000000000001", "media_type": "image/png"}
        return status, {"Content-Type": "application/json"}, json.dumps(body).encode()

    server = ScriptedServer(
        {("POST", "/api/assets/"): upload, ("POST", "/api/jobs/"): json_answer(201, job(1, "queued"))}
    )
    seen = []
    state = client_for(server).submit(
        LOADERS,
        inputs={"12": keyframe, "14.image": keyframe},
        priority=7,
        job_type="video",
        on_upload=lambda binding, asset: seen.append((binding.node_id, asset.id, asset.created)),
    )
    assert state.id == "j1" and state.status == "queued"
    assert len(uploads) == 1, "the same file is uploaded once"
    assert b'name="file"; filename="keyframe.png"' in uploads[0] and PNG in uploads[0]
    assert seen == [("12", "7d0c1a9e-0000-4000-8000-000000000001", True)]
    sent = json.loads(server.sent[-1].body or b"")
    assert sent["priority"] == 7 and sent["job_type"] == "video" and "backend" not in sent
    assert sent["workflow"]["12"]["inputs"] == {
        "image": "asset:7d0c1a9e-0000-4000-8000-000000000001",
        "upload": "image",
    }
    assert sent["workflow"]["14"]["inputs"]["image"] == "asset:7d0c1a9e-0000-4000-8000-000000000001"
    assert sent["workflow"]["13"] == LOADERS["13"], "other nodes are sent as they were"
    assert LOADERS["12"]["inputs"]["image"] == "example.png", "the caller's workflow is not changed"


def test_a_server_without_asset_uploads_says_so(tmp_path):
    keyframe = tmp_path / "keyframe.png"
    keyframe.write_bytes(PNG)
    server = ScriptedServer({})
    with pytest.raises(Exception, match=r"this server takes no asset uploads \(POST /api/assets/ is a 404\)"):
        client_for(server).submit(LOADERS, inputs={"12": keyframe})
    assert [request.path_url for request in server.sent] == ["/api/assets/"], "no job without its input"


# --- downloads ------------------------------------------------------------------------------------


def outputs_server(disposition: str) -> ScriptedServer:
    output = {"id": 5, "node_id": "20", "comfy_filename": "shot_00001_.png", "media_type": "image/png"}
    output["download_url"] = "/api/jobs/j1/outputs/5/"
    return ScriptedServer(
        {
            ("GET", "/api/jobs/j1/"): json_answer(200, job(3, "completed", outputs=[output])),
            ("GET", "/api/jobs/j1/outputs/5/"): lambda request: (
                200,
                {"Content-Type": "image/png", "Content-Disposition": disposition},
                PNG,
            ),
        }
    )


def test_download_uses_the_servers_file_name(tmp_path):
    server = outputs_server("inline; filename=\"shot_00001_.png\"; filename*=utf-8''shot_%C3%A9t%C3%A9.png")
    (path,) = client_for(server).download("j1", tmp_path / "out")
    assert path == tmp_path / "out" / "shot_été.png" and path.read_bytes() == PNG
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["shot_été.png"], "no partial file left"


@pytest.mark.parametrize("name", ["../../.bashrc", "renders/x.png", "..\\x.png", "/etc/passwd", "..", "bell\x07.png"])
def test_a_file_name_that_could_leave_the_folder_is_refused(tmp_path, name):
    server = outputs_server(f'attachment; filename="{name}"')
    with pytest.raises(DownloadRefused, match="output 5: refused the file name"):
        client_for(server).download("j1", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []
    assert not (tmp_path / ".bashrc").exists()


# --- following a job ------------------------------------------------------------------------------


class FakeSocket:
    def __init__(self, frames: list[Any]) -> None:
        self.frames = list(frames)
        self.closed = False

    def recv(self) -> str:
        if not self.frames:
            return ""  # the server closed it
        frame = self.frames.pop(0)
        if isinstance(frame, BaseException):
            raise frame
        return json.dumps(frame)

    def settimeout(self, timeout: float | None) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class Sockets:
    """Opens the scripted sockets in turn, remembering the URLs asked for."""

    def __init__(self, *sockets: FakeSocket | BaseException) -> None:
        self.sockets = list(sockets)
        self.urls: list[str] = []
        self.headers: list[Mapping[str, str]] = []

    def __call__(self, url: str, headers: Mapping[str, str], timeout: float) -> FakeSocket:
        self.urls.append(url)
        self.headers.append(headers)
        item = self.sockets.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item


def statuses(states: Iterator[Any]) -> list[tuple[int, str]]:
    return [(state.version, state.status) for state in states]


def test_watch_follows_the_websocket_snapshot_then_updates_in_order_each_once():
    sockets = Sockets(
        FakeSocket(
            [
                {"type": "snapshot", "job": job(2, "queued"), "events": []},
                {"type": "update", "job": job(3), "events": [{"seq": 3}]},
                {"type": "update", "job": None, "events": [{"seq": 4}]},
                {"type": "update", "job": job(3), "events": []},  # an older state again
                {"type": "update", "job": job(5, "completed"), "events": [{"seq": 5}]},
            ]
        )
    )
    client = client_for(ScriptedServer({}), open_socket=sockets)
    assert statuses(client.watch("j1")) == [(2, "queued"), (3, "running"), (5, "completed")]
    assert sockets.urls == ["ws://studio.test:8000/ws/jobs/j1/"]
    assert sockets.headers == [{"X-API-Key": "key-123"}]


def test_a_dropped_websocket_reconnects_asking_for_what_it_missed(monkeypatch):
    monkeypatch.setattr("anime_client.watching.time.sleep", lambda seconds: None)
    first = FakeSocket([{"type": "snapshot", "job": job(2), "events": [{"seq": 7}]}])
    second = FakeSocket([{"type": "snapshot", "job": job(4, "failed"), "events": []}])
    sockets = Sockets(first, second)
    client = client_for(ScriptedServer({}), open_socket=sockets)
    assert statuses(client.watch("j1")) == [(2, "running"), (4, "failed")]
    assert sockets.urls[1] == "ws://studio.test:8000/ws/jobs/j1/?after=7"
    assert first.closed and second.closed


def test_a_quiet_websocket_is_checked_against_rest():
    polled = job(6, "completed")
    server = ScriptedServer({("GET", "/api/jobs/j1/"): json_answer(200, polled)})
    sockets = Sockets(FakeSocket([{"type": "snapshot", "job": job(2), "events": []}, TimeoutError()]))
    client = client_for(server, open_socket=sockets)
    assert statuses(client.watch("j1")) == [(2, "running"), (6, "completed")]


def test_watch_polls_when_the_websocket_cannot_be_opened():
    answers = iter([job(1, "queued"), job(1, "queued"), job(2), job(3, "cancelled")])

    def next_answer(request: requests.PreparedRequest) -> tuple[int, Mapping[str, str], bytes]:
        return json_answer(200, next(answers))(request)

    server = ScriptedServer({("GET", "/api/jobs/j1/"): next_answer})
    notices: list[str] = []
    client = client_for(
        server, open_socket=Sockets(ConnectionRefusedError(111, "refused")), poll_seconds=0, on_notice=notices.append
    )
    assert statuses(client.watch("j1")) == [(1, "queued"), (2, "running"), (3, "cancelled")]
    assert notices == ["no live updates ([Errno 111] refused); polling every 0 s"]


def test_wait_gives_up_after_its_timeout():
    server = ScriptedServer({("GET", "/api/jobs/j1/"): json_answer(200, job(1, "queued"))})
    client = client_for(server, open_socket=Sockets(ConnectionRefusedError()), poll_seconds=0.01)
    with pytest.raises(WaitTimeout, match=r"job j1 is still queued after 0\.2 s"):
        client.wait("j1", timeout=0.2)


# --- error text -----------------------------------------------------------------------------------


def test_drf_error_shapes_flatten_to_one_line():
    body = {"workflow": ["node 3: unknown class 'Foo'", "node 4: steps over 150"], "priority": ["too high"]}
    assert (
        flatten_reason(body)
        == "workflow: node 3: unknown class 'Foo'; workflow: node 4: steps over 150; priority: too high"
    )
    assert flatten_reason({"detail": "job is already completed"}) == "job is already completed"
    assert flatten_reason({"non_field_errors": ["nope"]}) == "nope"


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after_seconds("42") == 42.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_seconds("soon") is None


def test_text_from_the_server_reaches_the_terminal_without_escape_sequences():
    assert one_line("KSampler\x1b]0;pwned\x07 failed\n  at step\x9b3", 200) == "KSampler]0;pwned failed at step3"
