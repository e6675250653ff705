"""Our signatures are Standard Webhooks signatures: the reference library verifies them."""

from __future__ import annotations

import time

import pytest
from standardwebhooks.webhooks import Webhook as ReferenceVerifier
from standardwebhooks.webhooks import WebhookVerificationError

from webhooks.signing import SECRET_PREFIX, secret_generate, secret_key, secret_problem, signed_headers

BODY = b'{"type":"job.completed","timestamp":"2026-01-01T00:00:00Z","data":{"id":"j1","status":"completed"}}'


def test_a_signed_message_verifies_with_the_reference_library():
    secret = secret_generate()
    headers = signed_headers("msg_1", int(time.time()), BODY, [secret])
    payload = ReferenceVerifier(secret).verify(BODY, headers)
    assert payload["data"]["status"] == "completed"
    assert headers["webhook-signature"].startswith("v1,")


def test_a_changed_body_id_or_timestamp_does_not_verify():
    secret = secret_generate()
    now = int(time.time())
    headers = signed_headers("msg_1", now, BODY, [secret])
    verifier = ReferenceVerifier(secret)
    with pytest.raises(WebhookVerificationError):
        verifier.verify(BODY.replace(b"completed", b"failed"), headers)
    with pytest.raises(WebhookVerificationError):
        verifier.verify(BODY, {**headers, "webhook-id": "msg_2"})
    with pytest.raises(WebhookVerificationError):
        verifier.verify(BODY, {**headers, "webhook-timestamp": str(now - 1)})


def test_another_secret_does_not_verify():
    headers = signed_headers("msg_1", int(time.time()), BODY, [secret_generate()])
    with pytest.raises(WebhookVerificationError):
        ReferenceVerifier(secret_generate()).verify(BODY, headers)


def test_during_a_rotation_receivers_holding_either_secret_verify():
    old, new = secret_generate(), secret_generate()
    headers = signed_headers("msg_1", int(time.time()), BODY, [new, old])
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert ReferenceVerifier(secret).verify(BODY, headers)["type"] == "job.completed"


def test_secrets_are_whsec_base64_of_32_random_bytes():
    first, second = secret_generate(), secret_generate()
    assert first.startswith(SECRET_PREFIX) and first != second
    assert len(secret_key(first)) == 32
    assert secret_problem(first) is None


@pytest.mark.parametrize(
    "secret,reason",
    [
        ("c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", "starts with 'whsec_'"),
        ("whsec_not base64!", "not base64"),
        ("whsec_c2hvcnQ=", "24 to 64 bytes"),
    ],
)
def test_a_secret_a_client_chose_is_checked(secret, reason):
    assert reason in (secret_problem(secret) or "")
