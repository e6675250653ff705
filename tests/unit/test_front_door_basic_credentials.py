"""Basic credentials are bytes a client chose (base64 decodes to anything): a key holding a NUL or other
control character is refused as no key (401), never looked up (PostgreSQL refuses NUL in text: a 500)."""

from __future__ import annotations

import base64

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "credentials",
    [
        b"me:ap_\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00_rest",
        b"ap_abc\x00defghijk_rest",
        b"me:ap_abcdefghijkl_re\x00st",
        b"me:ap_\xc3\xa9bcdefghijk_rest",
        b"me:ap_\x7fbcdefghijkl_rest",
    ],
)
@pytest.mark.parametrize("path", ["/comfy/queue", "/prompt", "/comfy/api/history"])
def test_basic_credentials_with_odd_bytes_are_refused_as_no_key(path, credentials):
    client = APIClient(raise_request_exception=False)
    header = "Basic " + base64.b64encode(credentials).decode()
    response = client.get(path, HTTP_AUTHORIZATION=header)
    assert response.status_code == 401, response.content[:300]
