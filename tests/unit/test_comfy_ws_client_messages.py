"""What a front-door socket's client sends is bounded: its feature_flags are answered once per socket
(ComfyUI reads them as the first message), not once per message at whatever rate a client sends them."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from access.ws_tickets import ws_ticket_issue
from anime_production.asgi import application
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = [(b"origin", b"http://testserver")]


def test_feature_flags_sent_many_times_are_answered_once() -> None:
    ticket = ws_ticket_issue(user=UserFactory.create()).ticket

    async def scenario() -> tuple[list[dict[str, Any]], bool]:
        ws = WebsocketCommunicator(application, f"/comfy/ws?clientId=tab&ticket={ticket}", headers=ORIGIN)
        connected, _ = await ws.connect()
        assert connected
        await ws.receive_json_from(timeout=5)  # status
        for _ in range(50):
            await ws.send_json_to({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
        answers = [await ws.receive_json_from(timeout=5)]
        silent = await ws.receive_nothing(timeout=0.5)
        await ws.disconnect()
        return answers, silent

    answers, silent = async_to_sync(scenario)()
    assert answers == [{"type": "feature_flags", "data": {"supports_preview_metadata": True}}]
    assert silent, "a repeated feature_flags was answered again"
