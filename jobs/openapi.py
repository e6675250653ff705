"""What OpenAPI cannot say by itself: the API's overview and its websockets.

OpenAPI 3.0 has no websockets, so their messages are schema components (`WsJobSnapshot`, ...),
built from the same serializers the consumers send, and the description says how to connect,
authenticate and read the close codes. A drf-spectacular postprocessing hook puts both in.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.plumbing import build_mocked_view
from drf_spectacular.utils import extend_schema
from rest_framework import serializers

from jobs.serializers import JobEventSerializer, JobSerializer


class WsJobSnapshotSerializer(serializers.Serializer):
    """`ws/jobs/{id}/`, first message: the job as the database has it, and its timeline after
    `?after=<seq>` (empty without `after`)."""

    type = serializers.ChoiceField(choices=["snapshot"])
    job = JobSerializer()
    events = JobEventSerializer(many=True)


class WsJobUpdateSerializer(serializers.Serializer):
    """`ws/jobs/{id}/`, every later message: the new state (null when only events are new) and the
    timeline events not sent before, in `seq` order."""

    type = serializers.ChoiceField(choices=["update"])
    job = JobSerializer(allow_null=True)
    events = JobEventSerializer(many=True)


class WsJobListSnapshotSerializer(serializers.Serializer):
    """`ws/jobs/`, first message: the waiting and running jobs you may see (at most 200)."""

    type = serializers.ChoiceField(choices=["snapshot"])
    jobs = JobSerializer(many=True)


class WsJobListUpdateSerializer(serializers.Serializer):
    """`ws/jobs/`, every later message: one job's new state."""

    type = serializers.ChoiceField(choices=["update"])
    job = JobSerializer()


WEBSOCKET_MESSAGES = [
    WsJobSnapshotSerializer,
    WsJobUpdateSerializer,
    WsJobListSnapshotSerializer,
    WsJobListUpdateSerializer,
]

API_DESCRIPTION = """\
Runs and tracks ComfyUI generation jobs: submit an API-format workflow, follow it live down to the
node and the sampler step, download its outputs, read why it failed.

## Authentication

- **API key**: `X-API-Key: <key>`, or the same key as `Authorization: Bearer <key>`. Make one with
  `manage.py create_api_key <user>` or `POST /api/keys/`; keys expire and can be revoked.
- **Session**: the admin's login cookie. Requests that change something also need the CSRF token
  (`X-CSRFToken` header).

## Errors

Every refusal is JSON. A 400 names each refused field (or query parameter) with its reasons,
`{"workflow": ["node 3 (KSampler): steps 500 is more than 200"]}`, or says in `detail` why the body
could not be read at all. 401, 403, 404, 409 and 429 carry `{"detail": "..."}`; a 429 also says in
`Retry-After` how many seconds to wait. Someone else's job or asset is a 404, as if it did not exist,
unless you are staff with the permission to view it.

## Websockets

OpenAPI cannot describe websockets; this section and the `Ws*` schemas do.

- `ws[s]://<host>/ws/jobs/{id}/?after=<seq>`: one job. First a `snapshot` (`WsJobSnapshot`: the
  state, and the timeline events after `seq`), then an `update` (`WsJobUpdate`) per change. Every
  event has the job's `seq`: reconnect with `?after=<the last seq you saw>` and nothing is lost.
- `ws[s]://<host>/ws/jobs/`: every job you may see (yours; all of them for staff who may view jobs).
  First a `snapshot` of the waiting and running ones (`WsJobListSnapshot`), then an `update` per
  change of any of them (`WsJobListUpdate`); drop an update whose `version` is not newer than the
  job's state you hold.

The client sends nothing. The `Origin` header, when sent, must name one of the server's hosts.

**Authentication at the handshake**, one of:

1. `?ticket=<ticket>`: a ticket from `POST /api/ws-tickets/` (signed in by session or API key). It
   is bound to your user, lives a few seconds (`expires_at`) and opens one connection: a second use,
   or a late one, is refused. Use it where a client cannot set headers (a browser's `WebSocket`
   on another origin), so that no key ever appears in a URL.
2. The API key in a header, `X-API-Key` or `Authorization: Bearer` (non-browser clients).
3. The session cookie (pages on the same origin, such as the admin).

An API key in the URL (`?token=`) is refused unless the server allows it (`WS_ALLOW_TOKEN_IN_URL`).

**Close codes**:

| code | when | what to do |
|---|---|---|
| 4400 | a refused query parameter (`?after=` not a sequence number); the reason is in the frame | fix the URL |
| 4401 | no valid credentials: no ticket, cookie or key, or a ticket used already or expired | get a new ticket |
| 4404 | no such job, or one you may not see | — |
| 4429 | more connects this minute than `WS_CONNECTS_PER_MINUTE` | reconnect after a minute |

4401 and 4404 close the handshake before it is accepted: a browser sees the connection fail (an
HTTP 403), not the code. 4400 and 4429 are sent after accepting, so the code and reason arrive.
"""


def add_websocket_messages(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: the overview, and the websocket messages as components
    (resolved as any response body is, so they share the `Job` and `JobEvent` components)."""
    result["info"]["description"] = API_DESCRIPTION
    view = build_mocked_view(
        method="GET", path="/ws/", extend_schema_decorator=extend_schema(), registry=generator.registry
    )
    for message in WEBSOCKET_MESSAGES:
        view.schema.resolve_serializer(message, "response")
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    built = generator.registry.build({}).get("schemas", {})
    for name in sorted(built):
        schemas.setdefault(name, built[name])
    result["components"]["schemas"] = dict(sorted(schemas.items()))
    return result
