"""`ComfyUIClient.upload_image`: ComfyUI's documented `POST /upload/image`, streamed, bounded, never
redirected; ComfyUI's answer says where the file went, and an answer that is a path is refused."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import pytest
import requests

from comfyui import ComfyUIError, UploadedInput
from tests.unit.test_comfyui_untrusted import Answer, client_answering, json_answer

DATA = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


def sending(answer: Answer) -> Callable[[requests.PreparedRequest], Answer]:
    """A transport's part: read the whole body (as a socket would be sent it), then answer."""

    def respond(request: requests.PreparedRequest) -> Answer:
        if request.body is not None and not isinstance(request.body, bytes | str):
            request.body = b"".join(request.body)
        return answer

    return respond


def form_of(request: requests.PreparedRequest) -> dict[str, Any]:
    """The multipart form a request carried: {field: value or (filename, bytes)}."""
    body = request.body
    assert isinstance(body, bytes)
    assert int(request.headers["Content-Length"]) == len(body), "sent with its length, not chunked"
    assert "Transfer-Encoding" not in request.headers
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode() + body
    )
    form: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        filename = part.get_filename()
        form[str(name)] = (filename, payload) if filename else payload.decode()
    return form


def upload_answering(answer: Answer, **options: Any) -> tuple[UploadedInput, list[requests.PreparedRequest]]:
    client, fake = client_answering(sending(answer))
    placed = client.upload_image(io.BytesIO(DATA), filename="job-0.png", size=len(DATA), **options)
    return placed, fake.requests


def test_the_form_is_comfyuis_and_the_answer_names_the_file() -> None:
    answer = json_answer({"name": "job-0.png", "subfolder": "anime_production/j1", "type": "input"})
    placed, sent = upload_answering(answer, subfolder="anime_production/j1")
    (request,) = sent
    assert (request.method, request.url) == ("POST", "http://gpu-box:8188/upload/image")
    form = form_of(request)
    assert form == {
        "type": "input",
        "subfolder": "anime_production/j1",
        "overwrite": "false",
        "image": ("job-0.png", DATA),
    }
    assert placed == UploadedInput("job-0.png", "anime_production/j1", "input")
    assert placed.loader_value == "anime_production/j1/job-0.png"


def test_a_name_comfyui_changed_on_a_collision_is_the_one_used() -> None:
    answer = json_answer({"name": "job-0 (1).png", "subfolder": "sub", "type": "input"})
    placed, _ = upload_answering(answer, subfolder="sub")
    assert placed.loader_value == "sub/job-0 (1).png"


def test_the_file_is_streamed_in_chunks_with_a_heartbeat_between_them() -> None:
    beats: list[int] = []
    client, fake = client_answering(sending(json_answer({"name": "big.bin", "subfolder": "", "type": "input"})))
    big = b"x" * (3 * 1024 * 1024 + 5)
    client.upload_image(io.BytesIO(big), filename="big.bin", size=len(big), on_chunk=lambda: beats.append(1))
    assert len(beats) == 4
    assert form_of(fake.requests[0])["image"] == ("big.bin", big)


@pytest.mark.parametrize(
    "answer",
    [
        {"name": "../../../../etc/cron.d/x", "subfolder": "sub", "type": "input"},
        {"name": "..", "subfolder": "sub", "type": "input"},
        {"name": "a\\b.png", "subfolder": "sub", "type": "input"},
        {"name": "x.png", "subfolder": "elsewhere", "type": "input"},
        {"name": "x.png", "subfolder": "sub", "type": "output"},
        {"nothing": "useful"},
        ["x.png"],
    ],
)
def test_an_answer_naming_a_path_or_another_folder_is_refused(answer: Any) -> None:
    with pytest.raises(ComfyUIError) as raised:
        upload_answering(json_answer(answer), subfolder="sub")
    assert not raised.value.retryable


@pytest.mark.parametrize(
    ("answer", "retryable"),
    [
        ((400, {}, b""), False),  # ComfyUI's bare 400 (no file, a path out of the folder)
        ((403, {}, b"Forbidden"), False),
        ((413, {}, b"Request Entity Too Large"), False),  # past ComfyUI's --max-upload-size
        ((500, {}, b"Internal Server Error"), True),
        ((200, {}, b"<html>not json</html>"), True),
        ((302, {"Location": "http://169.254.169.254/"}, b""), False),
    ],
)
def test_failures_say_whether_trying_again_can_help(answer: Answer, retryable: bool) -> None:
    with pytest.raises(ComfyUIError) as raised:
        upload_answering(answer)
    assert raised.value.retryable is retryable


def test_a_file_shorter_than_its_size_is_not_sent_as_if_whole() -> None:
    client, _ = client_answering(sending(json_answer({"name": "x.png", "subfolder": "", "type": "input"})))
    with pytest.raises(ComfyUIError, match="short of its size"):
        client.upload_image(io.BytesIO(b"abc"), filename="x.png", size=10)


@pytest.mark.parametrize(
    ("filename", "subfolder"),
    [("../x.png", ""), ("a/b.png", ""), (".hidden", ""), ('x".png', ""), ("x.png", "../up"), ("x.png", "/abs")],
)
def test_our_own_names_must_be_plain(filename: str, subfolder: str) -> None:
    client, fake = client_answering(lambda r: json_answer({}))
    with pytest.raises(ValueError):
        client.upload_image(io.BytesIO(DATA), filename=filename, size=len(DATA), subfolder=subfolder)
    assert fake.requests == []


def test_an_answer_is_bounded() -> None:
    huge = json.dumps({"name": "x.png", "subfolder": "", "type": "input", "pad": "y" * 5000}).encode()
    client, _ = client_answering(sending((200, {}, huge)), max_answer_bytes=1000)
    with pytest.raises(ComfyUIError, match=re.escape("larger than 1000 bytes")):
        client.upload_image(io.BytesIO(DATA), filename="x.png", size=len(DATA))
