"""The live server against its own schema: schemathesis sends generated requests (valid ones and
deliberately broken ones) to every operation of `/api/schema/` through daphne, as a staff user's API
key, and checks every answer: no 5xx, and no status, header, content type or body the schema does
not describe. A bounded number of examples per operation keeps it under a minute."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from django.core.management import call_command
from django.test import override_settings
from hypothesis import HealthCheck, settings
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from access.docs import project_schema
from access.keys import api_key_create, api_key_user
from devtools.processes import REPO
from tests.factories import UserFactory

# Per operation (about 40 operations, each answered in milliseconds): the run takes under a minute.
EXAMPLES_PER_OPERATION = 20


class KeyHolder:
    """A staff user's key, made once for the whole run (a test database flush per operation would
    cost more than the operation's requests), and again when a generated `DELETE /api/keys/{id}/`
    may have revoked it."""

    def __init__(self, db_access: Any) -> None:
        self.db_access = db_access
        with db_access.unblock():
            self.user = UserFactory.create(is_staff=True, is_superuser=True)
        self.key = ""
        self.maybe_revoked = False

    def headers(self) -> dict[str, str]:
        if not self.key or self.maybe_revoked:
            with self.db_access.unblock():
                if not self.key or api_key_user(self.key) is None:
                    self.key = api_key_create(user=self.user, name=f"schemathesis-{os.urandom(4).hex()}").key
            self.maybe_revoked = False
        return {"X-API-Key": self.key}


@pytest.fixture(scope="module")
def key_holder(web_server: str, django_db_blocker: Any) -> Iterator[KeyHolder]:
    with override_settings(API_KEYS_PER_USER=10_000):  # its own keys; the server keeps its limit
        yield KeyHolder(django_db_blocker)
    with django_db_blocker.unblock():
        call_command("flush", interactive=False, verbosity=0)  # as every transactional test leaves it


# Input the schema describes but cannot judge: such a request may be well-formed and still refused
# with a 400 and its reason, so "schema-valid input must be accepted" does not hold for it. Every
# other check (no 5xx, documented statuses, headers, types and bodies, schema-invalid input refused,
# no answer without credentials) holds for every operation.
JUDGED_BEYOND_THE_SCHEMA = {
    "POST /api/jobs/": "a workflow must be a runnable graph of allowed nodes within the bounds",
    "POST /api/assets/": "the file's bytes must be an image, video or audio file of a supported kind",
    "POST /api/keys/": "the name must not be one of your live keys', and live keys are bounded",
    "POST /api/templates/": "a template's inputs must name real inputs of its workflow, which must be runnable",
    "POST /api/templates/{name}/jobs/": "the inputs must be what that template's own JSON Schema asks",
    "POST /api/webhooks/": "the URL's host must resolve to public addresses only",
    "PUT /api/webhooks/{id}/": "the URL's host must resolve to public addresses only",
    "PATCH /api/webhooks/{id}/": "the URL's host must resolve to public addresses only",
}


# In a multipart body every value is text: a "boolean" sent as `name` is the valid name "true".
TEXT_ON_THE_WIRE = {"POST /api/assets/"}


def rules_beyond_the_schema(case: Any) -> bool:
    """Also any list: its `cursor` is one the server made, which a generated string is not."""
    operation = case.operation
    return operation.label in JUDGED_BEYOND_THE_SCHEMA or any(
        parameter.get("name") == "cursor" for parameter in operation.definition.raw.get("parameters", [])
    )


# The schema as this code generates it (schemathesis's lazy fixture loader does not work with
# pytest 9); the first test checks the server serves exactly this one.
PROJECT_SCHEMA = project_schema(None)
schema = schemathesis.openapi.from_dict(PROJECT_SCHEMA)


# Marked, so that the test database exists (pytest-django sets up only what marked tests use); the
# generated requests below share one user and key instead of a flush per operation.
@pytest.mark.django_db(transaction=True)
def test_the_server_serves_the_schema_under_test(web_server: str) -> None:
    served = requests.get(f"{web_server}/api/schema/?format=json", timeout=30)
    assert served.status_code == 200 and served.json() == PROJECT_SCHEMA


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_answer_is_what_the_schema_says(case: Any, web_server: str, key_holder: KeyHolder) -> None:
    excluded = [positive_data_acceptance] if rules_beyond_the_schema(case) else []
    if case.operation.label in TEXT_ON_THE_WIRE:
        excluded.append(negative_data_rejection)
    key_holder.maybe_revoked = case.operation.label == "DELETE /api/keys/{id}/"
    case.call_and_validate(base_url=web_server, headers=key_holder.headers(), timeout=30, excluded_checks=excluded)
    key_holder.maybe_revoked = key_holder.maybe_revoked or case.operation.label == "DELETE /api/keys/{id}/"


def test_the_schema_is_the_same_from_any_process() -> None:
    """Deterministic: two processes with different hash seeds write the same bytes."""
    outputs = []
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        done = subprocess.run(
            [sys.executable, "manage.py", "spectacular", "--format", "openapi-json"],
            cwd=REPO,
            env=env,
            capture_output=True,
            check=True,
            timeout=120,
        )
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1] and b'"/api/ws-tickets/"' in outputs[0]
