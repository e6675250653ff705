"""The Python client's HTTP, served in this process: a requests transport adapter that hands each
request to Django's test client, so the client meets the real URLconf, authentication, throttles,
serializers and error answers without a server (the unit tier starts none).

    session = django_session()
    client = Client("http://testserver", key, session=session)
"""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import urlsplit

import requests
from django.test import Client as DjangoClient
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers

BASE_URL = "http://testserver"
_NOT_PASSED = {"content-type", "content-length", "host"}


class DjangoAdapter(BaseAdapter):
    def __init__(self) -> None:
        super().__init__()
        self.django = DjangoClient()
        self.sent: list[requests.PreparedRequest] = []

    def send(  # type: ignore[override]  # a fake transport takes requests' keyword arguments and ignores them
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        self.sent.append(request)
        split = urlsplit(request.url or "")
        path = split.path + (f"?{split.query}" if split.query else "")
        body = request.body or b""
        headers = {name: value for name, value in request.headers.items() if name.lower() not in _NOT_PASSED}
        answer = self.django.generic(
            str(request.method),
            path,
            data=body.encode() if isinstance(body, str) else body,
            content_type=request.headers.get("Content-Type", ""),
            headers=headers,
        )
        # A streamed answer read to its end is closed, as Django's test client arranges: closing it
        # again here would fire request_finished and close the test's database connection.
        content = b"".join(answer.streaming_content) if answer.streaming else answer.content  # type: ignore[attr-defined]
        response = requests.Response()
        response.status_code = answer.status_code
        response.headers = CaseInsensitiveDict(dict(answer.items()))
        response.raw = io.BytesIO(content)
        response.reason = answer.reason_phrase
        response.url = request.url or ""
        response.request = request
        response.encoding = get_encoding_from_headers(response.headers)
        return response

    def close(self) -> None:
        pass


def django_session() -> tuple[requests.Session, DjangoAdapter]:
    session = requests.Session()
    adapter = DjangoAdapter()
    session.mount(BASE_URL, adapter)
    return session, adapter
