"""One user's front-door names are theirs alone: another user's upload of the same name, with
overwrite, neither replaces nor renames theirs, and a prompt that names it reads only the caller's own."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.files.base import ContentFile
from rest_framework.test import APIClient

from tests.factories import UserFactory, keyed_client
from tests.media_files import png

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("front_door_fleet")]


def keyed() -> APIClient:
    return keyed_client(UserFactory.create())


def upload(client: APIClient, data: bytes, **fields: str) -> Any:
    return client.post(
        "/comfy/upload/image", {"image": ContentFile(data, name="shot.png"), **fields}, format="multipart"
    )


def viewed(client: APIClient) -> bytes:
    served = client.get("/comfy/view", {"filename": "shot.png", "type": "input", "subfolder": "clipspace"})
    assert served.status_code == 200
    return b"".join(served.streaming_content)  # type: ignore[attr-defined]


def test_another_users_upload_of_the_same_name_with_overwrite_leaves_mine_alone():
    mine, theirs = keyed(), keyed()
    my_picture, their_picture = png(8, 8), png(9, 9)
    assert upload(mine, my_picture, subfolder="clipspace").json()["name"] == "shot.png"
    answer = upload(theirs, their_picture, subfolder="clipspace", overwrite="true")
    assert answer.json() == {"name": "shot.png", "subfolder": "clipspace", "type": "input"}  # no "(1)": not taken
    assert viewed(mine) == my_picture
    assert viewed(theirs) == their_picture
