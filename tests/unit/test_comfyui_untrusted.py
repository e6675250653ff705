"""What a compromised or buggy ComfyUI returns is untrusted: the client cleans, bounds and refuses it.

A fake transport answers in-process (no server): each test hands the client a hostile answer.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter

from comfyui import ComfyUIClient, ComfyUIError, OutputFile, history_outputs, parse_binary_frame, parse_text_frame
from comfyui.errors import OutputTooLarge

Answer = tuple[int, dict[str, str], bytes]


class FakeComfyUI(BaseAdapter):
    """A transport that answers every request with what `answer(request)` returns."""

    def __init__(self, answer: Callable[[requests.PreparedRequest], Answer]) -> None:
        super().__init__()
        self.answer = answer
        self.requests: list[requests.PreparedRequest] = []

    def send(  # type: ignore[override]  # a fake transport takes requests' keyword arguments and ignores them
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        self.requests.append(request)
        status, headers, body = self.answer(request)
        response = requests.Response()
        response.status_code = status
        response.headers.update(headers)
        response.raw = io.BytesIO(body)
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass


def client_answering(
    answer: Callable[[requests.PreparedRequest], Answer], **options: int
) -> tuple[ComfyUIClient, FakeComfyUI]:
    client = ComfyUIClient("http://gpu-box:8188", **options)
    fake = FakeComfyUI(answer)
    client._session.mount("http://", fake)
    return client, fake


def json_answer(body: object, status: int = 200) -> Answer:
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()


OUTPUT = OutputFile(node_id="9", kind="images", filename="x.png", subfolder="", type="output")


def test_a_redirect_from_view_is_never_followed() -> None:
    client, fake = client_answering(lambda r: (302, {"Location": "http://127.0.0.1:8490/internal-secret"}, b""))
    with pytest.raises(ComfyUIError, match="redirect") as raised:
        b"".join(client.view(OUTPUT))
    assert not raised.value.retryable
    assert [r.url for r in fake.requests] == ["http://gpu-box:8188/view?filename=x.png&subfolder=&type=output"]


def test_a_redirect_from_history_is_never_followed() -> None:
    client, fake = client_answering(lambda r: (307, {"Location": "http://169.254.169.254/latest/meta-data"}, b""))
    with pytest.raises(ComfyUIError, match="redirect"):
        client.history("p1")
    assert len(fake.requests) == 1


def test_view_stops_at_the_byte_limit() -> None:
    client, _ = client_answering(lambda r: (200, {}, b"x" * 5_000_000))
    received = 0
    with pytest.raises(OutputTooLarge) as raised:
        for chunk in client.view(OUTPUT, max_bytes=1_000_000, chunk_size=65536):
            received += len(chunk)
    assert received <= 1_000_000
    assert raised.value.limit == 1_000_000


def test_view_within_the_limit_is_whole() -> None:
    client, _ = client_answering(lambda r: (200, {}, b"png-bytes" * 1000))
    assert b"".join(client.view(OUTPUT, max_bytes=1_000_000)) == b"png-bytes" * 1000


def test_a_json_answer_past_the_limit_is_refused() -> None:
    client, _ = client_answering(lambda r: json_answer({"p1": {"outputs": {"9": {"text": ["x" * 50_000]}}}}),
                                 max_answer_bytes=10_000)  # fmt: skip
    with pytest.raises(ComfyUIError, match="larger than 10000 bytes"):
        client.history("p1")


def test_nul_and_lone_surrogates_in_history_are_cleaned() -> None:
    raw = (
        '{"p1": {"status": {"status_str": "error", "messages": [["execution_error", '
        '{"exception_message": "bad\\u0000 value \\ud800 here", "traceback": ["line\\u0000\\n"]}]]}, '
        '"outputs": {"9": {"images": [{"filename": "evil\\u0000.png", "subfolder": "", "type": "output"}]}}}}'
    )
    client, _ = client_answering(lambda r: (200, {}, raw.encode()))
    entry = client.history("p1")
    assert entry is not None
    error = entry.message("execution_error")
    assert error == {"exception_message": "bad value ? here", "traceback": ["line\n"]}
    assert entry.outputs["9"]["images"][0]["filename"] == "evil.png"
    json.dumps(entry.outputs).encode("utf-8")  # storable as UTF-8 text


def test_json_nested_too_deep_is_a_protocol_error_not_a_crash() -> None:
    client, _ = client_answering(lambda r: (200, {}, b"[" * 100_000 + b"]" * 100_000))
    with pytest.raises(ComfyUIError, match="not JSON") as raised:
        client.queue()
    assert raised.value.retryable


def test_a_websocket_frame_with_nul_is_cleaned_and_a_deep_one_ignored() -> None:
    message = parse_text_frame('{"type": "executing", "data": {"node": "3\\u0000", "prompt_id": "p\\udfff"}}')
    assert message is not None
    assert message.data == {"node": "3", "prompt_id": "p?"}
    assert parse_text_frame('{"type": "x", "data": ' + "[" * 50_000 + "]" * 50_000 + "}") is None


def test_a_preview_claiming_to_be_html_is_taken_as_an_image() -> None:
    metadata = json.dumps({"prompt_id": "p1", "image_type": "text/html"}).encode()
    frame = (4).to_bytes(4, "big") + len(metadata).to_bytes(4, "big") + metadata + b"<script>alert(1)</script>"
    preview = parse_binary_frame(frame)
    assert preview is not None
    assert preview.media_type == "image/jpeg"


def test_a_rejection_with_malformed_node_errors_still_explains() -> None:
    body = {
        "error": {"message": "Prompt outputs failed validation"},
        "node_errors": {"3": "not a dict", "4": {"errors": 7}},
    }
    client, _ = client_answering(lambda r: json_answer(body, status=400))
    with pytest.raises(ComfyUIError, match="Prompt outputs failed validation") as raised:
        client.submit({"3": {}}, prompt_id="p1", client_id="c1")
    assert not raised.value.retryable


@pytest.mark.parametrize(
    "body",
    [
        {"p1": {"status": "done", "outputs": ["x"]}},
        {"p1": {"status": {"messages": "nope", "status_str": 7}, "outputs": {"9": "not a dict", "10": {"images": 3}}}},
        {"p1": {"status": [], "outputs": None}},
    ],
)
def test_a_history_of_an_unexpected_shape_reads_as_empty(body: object) -> None:
    client, _ = client_answering(lambda r: json_answer(body))
    entry = client.history("p1")
    assert entry is not None
    assert history_outputs(entry) == []
    assert entry.message("execution_error") is None


def test_a_queue_of_an_unexpected_shape_lists_nothing() -> None:
    client, _ = client_answering(lambda r: json_answer({"queue_running": "x", "queue_pending": [1, [2, "p9"], None]}))
    snapshot = client.queue()
    assert (snapshot.running, snapshot.pending) == ([], ["p9"])
