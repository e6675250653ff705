"""API keys: hashed at rest, expiring, several named keys per user, revocable; REST and websockets."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from access.keys import api_key_create, api_key_revoke, api_key_user, api_key_user_recent, recent_key_users
from access.models import ApiKey
from jobs.ws_auth import key_in_scope

pytestmark = pytest.mark.django_db


@pytest.fixture
def artist(django_user_model):
    return django_user_model.objects.create_user("artist", password="pw")


def client_with(headers: dict[str, str]) -> APIClient:
    client = APIClient()
    client.credentials(**headers)
    return client


def test_a_key_is_stored_only_as_a_digest_and_works_in_either_header(artist):
    new = api_key_create(user=artist, name="pipeline")
    stored = ApiKey.objects.get(pk=new.record.pk)
    assert new.key not in (stored.digest, stored.prefix) and new.key.split("_", 2)[2] not in stored.digest
    for headers in ({"HTTP_X_API_KEY": new.key}, {"HTTP_AUTHORIZATION": f"Bearer {new.key}"}):
        assert client_with(headers).get("/api/jobs/").status_code == 200


def test_a_wrong_expired_or_revoked_key_is_refused(artist):
    good = api_key_create(user=artist, name="a")
    wrong = good.key[:-4] + "zzzz"
    assert client_with({"HTTP_X_API_KEY": wrong}).get("/api/jobs/").status_code == 401
    ApiKey.objects.filter(pk=good.record.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert client_with({"HTTP_X_API_KEY": good.key}).get("/api/jobs/").status_code == 401
    other = api_key_create(user=artist, name="b")
    owner = client_with({"HTTP_X_API_KEY": other.key})
    assert owner.delete(f"/api/keys/{other.record.pk}/").status_code == 204
    assert client_with({"HTTP_X_API_KEY": other.key}).get("/api/jobs/").status_code == 401


def test_keys_are_named_listed_and_created_over_rest(artist):
    client = APIClient()
    client.force_authenticate(artist)
    made = client.post("/api/keys/", {"name": "houdini", "days": 30}, format="json")
    assert made.status_code == 201
    key = made.json()["key"]
    assert api_key_user(key) == artist
    listed = client.get("/api/keys/").json()
    assert [k["name"] for k in listed] == ["houdini"]
    assert "key" not in listed[0] and "digest" not in listed[0]
    assert client.post("/api/keys/", {"name": "houdini"}, format="json").status_code == 400
    assert client.post("/api/keys/", {"name": "forever", "days": 100000}, format="json").status_code == 400


def test_nobody_sees_or_revokes_another_users_keys(artist, django_user_model):
    theirs = api_key_create(user=django_user_model.objects.create_user("other"), name="x")
    client = APIClient()
    client.force_authenticate(artist)
    assert client.get("/api/keys/").json() == []
    assert client.delete(f"/api/keys/{theirs.record.pk}/").status_code == 404
    assert api_key_user(theirs.key) is not None


def test_the_number_of_live_keys_is_bounded(artist, settings):
    settings.API_KEYS_PER_USER = 2
    api_key_create(user=artist, name="one")
    api_key_create(user=artist, name="two")
    client = APIClient()
    client.force_authenticate(artist)
    answer = client.post("/api/keys/", {"name": "three"}, format="json")
    assert answer.status_code == 400
    assert "at most 2" in answer.json()["detail"]


def test_the_cli_prints_a_working_key(artist, capsys):
    call_command("create_api_key", "artist", "--name", "shell")
    assert api_key_user(capsys.readouterr().out.strip()) == artist
    with pytest.raises(CommandError, match="no user"):
        call_command("create_api_key", "nobody")


def test_websocket_takes_the_key_from_a_header_and_from_the_url_only_where_allowed(settings):
    assert key_in_scope({"headers": [(b"x-api-key", b"ap_abc")], "query_string": b""}) == "ap_abc"
    assert key_in_scope({"headers": [(b"authorization", b"Bearer ap_def")], "query_string": b""}) == "ap_def"
    assert key_in_scope({"headers": [], "query_string": b""}) is None
    assert key_in_scope({"headers": [], "query_string": b"token=ap_ghi"}) is None, "off by default"
    settings.WS_ALLOW_TOKEN_IN_URL = True
    assert key_in_scope({"headers": [], "query_string": b"token=ap_ghi"}) == "ap_ghi"


def test_a_handshake_reads_a_key_once_in_a_while_and_never_a_revoked_one(artist, settings):
    settings.API_KEY_RECENT_SECONDS = 10
    new = api_key_create(user=artist, name="storm")
    assert api_key_user_recent(new.key) == artist
    with CaptureQueriesContext(connection) as reads:
        assert [api_key_user_recent(new.key) for _ in range(50)] == [artist] * 50
    assert len(reads) == 0, "the same key again within seconds is not read again"
    assert api_key_revoke(new.record)
    assert recent_key_users.get(new.key) is None and api_key_user_recent(new.key) is None

    short = api_key_create(user=artist, name="short")
    ApiKey.objects.filter(pk=short.record.pk).update(expires_at=timezone.now() + timedelta(milliseconds=300))
    assert api_key_user_recent(short.key) == artist
    time.sleep(0.35)
    assert api_key_user_recent(short.key) is None, "never kept past the key's own expiry"
    wrong = short.key[:-4] + "zzzz"
    assert api_key_user_recent(wrong) is None and recent_key_users.get(wrong) is None
