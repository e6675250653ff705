"""The front door's websocket (/comfy/ws?clientId=) through the real ASGI application and Channels'
in-memory layer: who may connect, what a client hears first, and only its own prompts after that."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from access.ws_tickets import ws_ticket_issue
from anime_production.asgi import application
from comfy_api import consumers
from comfy_api.models import FrontDoorPrompt
from comfy_api.ws_announce import front_door_queue_changed
from comfy_api.ws_follow import ClientStream
from jobs import selectors, services
from jobs.models import EventKind, Job, JobStatus
from jobs.serializers import JobEventSerializer
from tests.factories import JobFactory, UserFactory, api_key_for

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = [(b"origin", b"http://localhost:8000")]
WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
}


def with_key(key: str) -> list[tuple[bytes, bytes]]:
    return [*ORIGIN, (b"x-api-key", key.encode())]


def front_door_job(user: Any, client_id: str, prompt_id: str = "p-1", **fields: Any) -> Job:
    job = JobFactory.create(user=user, workflow=WORKFLOW, **fields)
    FrontDoorPrompt.objects.create(job=job, user=user, client_id=client_id, prompt_id=prompt_id, number=1)
    return job


async def receive_all(ws: WebsocketCommunicator, until: Any = None, timeout: float = 5) -> list[dict[str, Any]]:
    """Messages until one matches `until` (or none came for a moment when `until` is None)."""
    received: list[dict[str, Any]] = []
    while True:
        if until is None and await ws.receive_nothing(timeout=0.3):
            return received
        received.append(await ws.receive_json_from(timeout=timeout))
        if until is not None and until(received[-1]):
            return received


def ends(message: dict[str, Any]) -> bool:
    return message["type"] == "executing" and message["data"]["node"] is None


def test_a_client_hears_its_queue_first_then_its_prompt_run_to_the_end() -> None:
    user = UserFactory.create()
    job = front_door_job(user, "abc")
    key = api_key_for(user)

    async def scenario() -> list[dict[str, Any]]:
        ws = WebsocketCommunicator(application, "/comfy/ws?clientId=abc", headers=with_key(key))
        connected, _ = await ws.connect()
        assert connected
        first = await ws.receive_json_from(timeout=5)
        await database_sync_to_async(services.job_transition)(job, JobStatus.SUBMITTED)
        await database_sync_to_async(services.job_transition)(job, JobStatus.RUNNING)
        # The tracker's events are written between broadcasts: this one is not broadcast at all, and
        # the client still hears of it (read from the timeline when the next broadcast shows the gap).
        await database_sync_to_async(services.job_event)(
            job, EventKind.NODE_STARTED, node_id="1", data={"class_type": "EmptyImage"}
        )
        await database_sync_to_async(services.job_close)(job, JobStatus.COMPLETED)
        rest = await receive_all(ws, until=ends)
        await ws.disconnect()
        return [first, *rest]

    told = async_to_sync(scenario)()
    assert told[0] == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 1}}, "sid": "abc"}}
    assert [m["type"] for m in told[1:]] == [
        "execution_start",
        "execution_cached",
        "progress_state",
        "executing",
        "execution_success",
        "status",
        "executing",
    ]
    assert told[4]["data"] == {"node": "1", "display_node": "1", "prompt_id": "p-1"}
    assert told[-2]["data"]["status"]["exec_info"]["queue_remaining"] == 0
    assert told[-1]["data"] == {"node": None, "prompt_id": "p-1"}


def test_a_client_that_connects_while_its_prompt_runs_gets_where_it_is() -> None:
    user = UserFactory.create()
    job = front_door_job(user, "late")
    services.job_transition(job, JobStatus.SUBMITTED)
    services.job_transition(job, JobStatus.RUNNING)
    services.job_event(job, EventKind.NODE_FINISHED, node_id="1", data={"class_type": "EmptyImage"})
    Job.objects.filter(pk=job.pk).update(current_node_id="2", current_node_class="SaveImage", step_value=3, step_max=8)
    key = api_key_for(user)

    async def scenario() -> list[dict[str, Any]]:
        ws = WebsocketCommunicator(application, "/comfy/ws?clientId=late", headers=with_key(key))
        await ws.connect()
        told = await receive_all(ws)
        await ws.disconnect()
        return told

    told = async_to_sync(scenario)()
    assert [m["type"] for m in told] == [
        "status",
        "execution_start",
        "execution_cached",
        "progress_state",
        "executing",
        "progress_state",
        "progress",
    ]
    assert told[4]["data"]["node"] == "2"
    assert told[6]["data"] == {"value": 3.0, "max": 8.0, "prompt_id": "p-1", "node": "2"}
    assert told[5]["data"]["nodes"]["1"]["state"] == "finished"


def test_another_user_with_the_same_client_id_hears_nothing_of_the_prompt() -> None:
    owner, other = UserFactory.create(), UserFactory.create()
    job = front_door_job(owner, "shared")
    key = api_key_for(other)

    async def scenario() -> list[dict[str, Any]]:
        ws = WebsocketCommunicator(application, "/comfy/ws?clientId=shared", headers=with_key(key))
        await ws.connect()
        first = await ws.receive_json_from(timeout=5)
        await database_sync_to_async(services.job_transition)(job, JobStatus.SUBMITTED)
        await database_sync_to_async(services.job_transition)(job, JobStatus.RUNNING)
        await database_sync_to_async(services.job_close)(job, JobStatus.COMPLETED)
        rest = await receive_all(ws)
        await ws.disconnect()
        return [first, *rest]

    told = async_to_sync(scenario)()
    assert told == [{"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "shared"}}]


def test_the_same_users_other_client_id_hears_nothing_of_the_prompt() -> None:
    user = UserFactory.create()
    job = front_door_job(user, "editor-tab-1")
    key = api_key_for(user)

    async def scenario() -> list[dict[str, Any]]:
        ws = WebsocketCommunicator(application, "/comfy/ws?clientId=script-2", headers=with_key(key))
        await ws.connect()
        await ws.receive_json_from(timeout=5)
        await database_sync_to_async(services.job_transition)(job, JobStatus.SUBMITTED)
        await database_sync_to_async(services.job_transition)(job, JobStatus.RUNNING)
        rest = await receive_all(ws)
        await ws.disconnect()
        return rest

    assert async_to_sync(scenario)() == []


def test_without_credentials_the_handshake_is_refused() -> None:
    async def scenario() -> Any:
        ws = WebsocketCommunicator(application, "/comfy/ws?clientId=abc", headers=ORIGIN)
        return await ws.connect()

    connected, code = async_to_sync(scenario)()
    assert not connected and code == 4401


@pytest.mark.parametrize("client_id", ["x" * 129, "bad%20id", "a/b"])
def test_a_client_id_too_long_or_not_an_id_is_refused_with_the_reason(client_id: str) -> None:
    key = api_key_for(UserFactory.create())

    async def scenario() -> dict[str, Any]:
        ws = WebsocketCommunicator(application, f"/comfy/ws?clientId={client_id}", headers=with_key(key))
        await ws.connect()
        return await ws.receive_output(timeout=5)

    closed = async_to_sync(scenario)()
    assert closed["type"] == "websocket.close" and closed["code"] == 4400 and "clientId" in closed["reason"]


def test_a_ticket_opens_the_editors_socket_on_the_api_alias_and_feature_flags_are_answered() -> None:
    user = UserFactory.create()
    ticket = ws_ticket_issue(user=user).ticket

    async def scenario() -> list[dict[str, Any]]:
        ws = WebsocketCommunicator(application, f"/comfy/api/ws?clientId=tab&ticket={ticket}", headers=ORIGIN)
        connected, _ = await ws.connect()
        assert connected
        status = await ws.receive_json_from(timeout=5)
        await ws.send_json_to({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
        flags = await ws.receive_json_from(timeout=5)
        await ws.disconnect()
        return [status, flags]

    status, flags = async_to_sync(scenario)()
    assert status["data"]["sid"] == "tab"
    assert flags == {"type": "feature_flags", "data": {"supports_preview_metadata": True}}


def test_a_socket_without_client_id_is_given_one_as_comfyui_does() -> None:
    key = api_key_for(UserFactory.create())

    async def scenario() -> dict[str, Any]:
        ws = WebsocketCommunicator(application, "/comfy/ws", headers=with_key(key))
        await ws.connect()
        status = await ws.receive_json_from(timeout=5)
        await ws.disconnect()
        return status

    status = async_to_sync(scenario)()
    assert len(status["data"]["sid"]) == 32


def test_open_sockets_per_user_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consumers, "CONNECTIONS_PER_USER", 1)
    key = api_key_for(UserFactory.create())

    async def scenario() -> dict[str, Any]:
        first = WebsocketCommunicator(application, "/comfy/ws?clientId=a", headers=with_key(key))
        await first.connect()
        second = WebsocketCommunicator(application, "/comfy/ws?clientId=b", headers=with_key(key))
        await second.connect()
        refused = await second.receive_output(timeout=5)
        await first.disconnect()
        third = WebsocketCommunicator(application, "/comfy/ws?clientId=c", headers=with_key(key))
        connected, _ = await third.connect()
        assert connected, "a closed socket no longer counts"
        await third.disconnect()
        return refused

    refused = async_to_sync(scenario)()
    assert refused["type"] == "websocket.close" and refused["code"] == 4429


def test_a_new_prompt_is_told_as_the_callers_new_queue_at_once() -> None:
    user = UserFactory.create()
    key = api_key_for(user)

    async def scenario() -> list[dict[str, Any]]:
        ws = WebsocketCommunicator(application, "/comfy/ws?clientId=q", headers=with_key(key))
        await ws.connect()
        first = await ws.receive_json_from(timeout=5)
        # What POST /comfy/prompt does after it made the job (a new job is not broadcast until a GPU takes it).
        await database_sync_to_async(front_door_job)(user, "q")
        await database_sync_to_async(front_door_queue_changed)(user.pk)
        second = await ws.receive_json_from(timeout=5)
        await ws.disconnect()
        return [first, second]

    first, second = async_to_sync(scenario)()
    assert first["data"]["status"]["exec_info"]["queue_remaining"] == 0
    assert second == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 1}}}}


def test_several_prompts_of_one_client_are_told_one_run_at_a_time_as_comfyui_runs_them() -> None:
    # The fleet runs both at once; ComfyUI (and its clients) one at a time: the second's run is told,
    # whole and in order from its timeline, once the first's has ended.
    user = UserFactory.create()
    first_job = front_door_job(user, "many", prompt_id="first")
    second_job = front_door_job(user, "many", prompt_id="second")
    for job in (first_job, second_job):
        services.job_transition(job, JobStatus.SUBMITTED)
        services.job_transition(job, JobStatus.RUNNING)
    services.job_event(second_job, EventKind.NODE_STARTED, node_id="1", data={"class_type": "EmptyImage"})
    key = api_key_for(user)

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        ws = WebsocketCommunicator(application, "/comfy/ws?clientId=many", headers=with_key(key))
        await ws.connect()
        opening = await receive_all(ws)
        await database_sync_to_async(services.job_close)(second_job, JobStatus.COMPLETED)
        meanwhile = await receive_all(ws)
        await database_sync_to_async(services.job_close)(first_job, JobStatus.CANCELLED)
        rest = await receive_all(ws, until=lambda m: ends(m) and m["data"]["prompt_id"] == "second")
        await ws.disconnect()
        return [*opening, *meanwhile, *rest], meanwhile

    told, meanwhile = async_to_sync(scenario)()
    assert meanwhile == [], "the second prompt ended while the first was told: it waits"
    runs = [
        (m["type"], m["data"].get("prompt_id"))
        for m in told
        if m["type"] in ("execution_start", "execution_success", "execution_interrupted")
        or (m["type"] == "executing" and m["data"]["node"] is None)
    ]
    assert runs == [
        ("execution_start", "first"),
        ("execution_interrupted", "first"),
        ("executing", "first"),
        ("execution_start", "second"),
        ("execution_success", "second"),
        ("executing", "second"),
    ]
    # The second's run is told whole, from its timeline: its node too.
    assert {"node": "1", "display_node": "1", "prompt_id": "second"} in [
        m["data"] for m in told if m["type"] == "executing"
    ]
    queues = [m["data"]["status"]["exec_info"]["queue_remaining"] for m in told if m["type"] == "status"]
    assert queues == [2, 0, 0]


# Closed before the handshake is accepted (the server answers HTTP 403), with no code of its own.
REFUSED = 1000


def basic(name: str, password: str) -> tuple[bytes, bytes]:
    return (b"authorization", b"Basic " + base64.b64encode(f"{name}:{password}".encode()))


def test_a_program_sending_the_key_as_basic_credentials_and_no_origin_is_let_in() -> None:
    # What Python's `websockets` sends for ws://artist:<key>@host/comfy/ws (comfy-api-simplified does).
    key = api_key_for(UserFactory.create())

    async def scenario() -> Any:
        ws = WebsocketCommunicator(application, "/comfy/ws?clientId=py", headers=[basic("artist", key)])
        connected, _ = await ws.connect()
        status = await ws.receive_json_from(timeout=5) if connected else None
        await ws.disconnect()
        return connected, status

    connected, status = async_to_sync(scenario)()
    assert connected and status["data"]["sid"] == "py"


@pytest.mark.parametrize(
    ("headers", "refused_with"),
    [
        # A page on another site, even with a good key: a browser sends its Origin, and it is not ours.
        ("foreign origin", REFUSED),
        # Basic credentials that are no live key never fall through to anything weaker.
        ("basic without a key", 4401),
        # The project's own sockets still want an Origin of ours.
        ("project socket without origin", REFUSED),
    ],
)
def test_sockets_from_elsewhere_or_with_a_bad_key_are_refused(headers: str, refused_with: int) -> None:
    user = UserFactory.create()
    key = api_key_for(user)
    job = JobFactory.create(user=user)
    path, sent = {
        "foreign origin": (
            "/comfy/ws?clientId=x",
            [(b"origin", b"https://evil.example"), (b"x-api-key", key.encode())],
        ),
        "basic without a key": ("/comfy/ws?clientId=x", [basic("artist", "not-a-key")]),
        "project socket without origin": (f"/ws/jobs/{job.id}/", [(b"x-api-key", key.encode())]),
    }[headers]

    async def scenario() -> Any:
        ws = WebsocketCommunicator(application, path, headers=sent)
        return await ws.connect()

    connected, code = async_to_sync(scenario)()
    assert not connected and code == refused_with


def test_the_end_of_the_prompt_being_told_is_not_waited_for_when_its_broadcast_was_lost() -> None:
    user = UserFactory.create()
    first_job = front_door_job(user, "lossy", prompt_id="first")
    second_job = front_door_job(user, "lossy", prompt_id="second")
    for job in (first_job, second_job):
        services.job_transition(job, JobStatus.SUBMITTED)
        services.job_transition(job, JobStatus.RUNNING)
    stream = ClientStream(user, "lossy")
    opening = [m for m in stream.opening() if isinstance(m, dict)]
    assert [m["data"]["prompt_id"] for m in opening if m["type"] == "execution_start"] == ["first"]
    services.job_close(first_job, JobStatus.COMPLETED)  # its broadcast never reaches this socket
    services.job_close(second_job, JobStatus.COMPLETED)
    second_job.refresh_from_db()
    last = second_job.events.order_by("-seq").first()
    assert last is not None
    delivered = stream.deliver(str(second_job.pk), selectors.job_state(second_job), [JobEventSerializer(last).data])
    told = [m for m in delivered if isinstance(m, dict)]
    runs = [
        (m["type"], m["data"]["prompt_id"])
        for m in told
        if m["type"] in ("execution_start", "execution_success")
        or (m["type"] == "executing" and m["data"]["node"] is None)
    ]
    assert runs == [
        ("execution_success", "first"),
        ("executing", "first"),
        ("execution_start", "second"),
        ("execution_success", "second"),
        ("executing", "second"),
    ]
