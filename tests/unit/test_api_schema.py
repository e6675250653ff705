"""The OpenAPI schema: valid, warning-free, complete, generated once, and true to what the API and
its websockets really send (what they send is checked against it here, not only its form)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs installed; only validate() is used
import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema
from rest_framework.test import APIClient

from access.docs import project_schema
from jobs import services
from jobs.models import FailureCategory, Job, JobGroup, JobOutput, JobStatus
from tests.factories import JobFactory, UserFactory, api_key_for
from tests.unit.test_websocket import communicator, with_key

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000") + b"\x00" * 32


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return SchemaGenerator().get_schema(request=None, public=True)


def test_the_schema_is_valid_openapi_and_generates_without_a_warning(tmp_path: Path, schema: dict[str, Any]) -> None:
    # Fails on any warning or error of the generator, or on a schema that is not valid OpenAPI.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    validate_schema(schema)
    assert schema["openapi"].startswith("3.0")


# Every endpoint and action named in the README's API table.
EXPECTED_OPERATIONS = {
    ("get", "/api/jobs/"),
    ("post", "/api/jobs/"),
    ("get", "/api/jobs/{id}/"),
    ("post", "/api/jobs/{id}/cancel/"),
    ("post", "/api/jobs/{id}/retry/"),
    ("get", "/api/jobs/{id}/events/"),
    ("get", "/api/jobs/{id}/attempts/"),
    ("get", "/api/jobs/{id}/outputs/{output_id}/"),
    ("get", "/api/jobs/{id}/preview/"),
    ("get", "/api/keys/"),
    ("post", "/api/keys/"),
    ("delete", "/api/keys/{id}/"),
    ("get", "/api/assets/"),
    ("post", "/api/assets/"),
    ("get", "/api/assets/{id}/"),
    ("delete", "/api/assets/{id}/"),
    ("get", "/api/assets/{id}/content/"),
    ("get", "/api/stats/"),
    ("post", "/api/ws-tickets/"),
    ("get", "/api/groups/"),
    ("get", "/api/groups/{id}/"),
    ("post", "/api/groups/{id}/cancel/"),
    ("get", "/api/templates/"),
    ("post", "/api/templates/"),
    ("get", "/api/templates/{name}/"),
    ("get", "/api/templates/{name}/versions/"),
    ("get", "/api/templates/{name}/versions/{number}/"),
    ("post", "/api/templates/{name}/jobs/"),
    ("get", "/api/jobs/{id}/webhook-deliveries/"),
    ("get", "/api/webhooks/"),
    ("post", "/api/webhooks/"),
    ("get", "/api/webhooks/{id}/"),
    ("put", "/api/webhooks/{id}/"),
    ("patch", "/api/webhooks/{id}/"),
    ("delete", "/api/webhooks/{id}/"),
    ("post", "/api/webhooks/{id}/rotate-secret/"),
    ("post", "/api/webhooks/{id}/test/"),
    ("get", "/api/webhooks/{id}/deliveries/"),
}


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, item in schema["paths"].items() for method, op in item.items()]


def test_every_endpoint_documents_its_answers_and_errors(schema: dict[str, Any]) -> None:
    found = {(method, path) for method, path, _ in operations(schema)}
    assert found >= EXPECTED_OPERATIONS, EXPECTED_OPERATIONS - found
    for method, path, op in operations(schema):
        where = f"{method.upper()} {path}"
        responses = op["responses"]
        success = [code for code in responses if code.startswith("2")]
        assert success, where
        for code in success:
            assert code == "204" or responses[code].get("content"), f"{where} {code}: no body described"
        # Everything here needs credentials, counts against a rate, and refuses with a `detail`.
        assert {"ApiKeyAuth": []} in op["security"] and {"BearerAuth": []} in op["security"], where
        assert {"401", "429"} <= set(responses), where
        assert "Retry-After" in responses["429"]["headers"], where
        if "{" in path:
            assert "404" in responses, where
        if op.get("requestBody") or any(p["in"] == "query" for p in op.get("parameters", [])):
            assert responses["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ValidationErrors")
        for code in ("401", "403", "404", "409", "429"):
            if code in responses:
                ref = responses[code]["content"]["application/json"]["schema"]["$ref"]
                assert "detail" in schema["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"], (where, code)
    schemes = schema["components"]["securitySchemes"]
    assert (schemes["ApiKeyAuth"]["type"], schemes["ApiKeyAuth"]["in"], schemes["ApiKeyAuth"]["name"]) == (
        "apiKey",
        "header",
        "X-API-Key",
    )
    assert (schemes["BearerAuth"]["type"], schemes["BearerAuth"]["scheme"]) == ("http", "bearer")
    assert (schemes["cookieAuth"]["in"], schemes["cookieAuth"]["name"]) == ("cookie", "sessionid")


def test_the_websockets_are_described(schema: dict[str, Any]) -> None:
    description = schema["info"]["description"]
    for fact in ("ws/jobs/{id}/", "ws/jobs/", "?ticket=", "POST /api/ws-tickets/", "X-API-Key", "4400", "4429", "4401"):
        assert fact in description, fact
    components = schema["components"]["schemas"]
    assert components["WsJobSnapshot"]["properties"]["job"] == {"$ref": "#/components/schemas/Job"}
    assert {"WsJobUpdate", "WsJobListSnapshot", "WsJobListUpdate", "WsTicket"} <= set(components)


# --- what is sent matches what is described ---------------------------------------------------------


def json_schema(openapi: dict[str, Any], component: str) -> dict[str, Any]:
    """An OpenAPI 3.0 component as JSON Schema: `nullable` becomes a null alternative, and references
    resolve within the schema's own components."""

    def convert(node: Any) -> Any:
        if isinstance(node, list):
            return [convert(item) for item in node]
        if not isinstance(node, dict):
            return node
        node = {key: convert(value) for key, value in node.items() if key not in ("readOnly", "writeOnly")}
        if node.pop("nullable", False):
            return {"anyOf": [node, {"type": "null"}]}
        return node

    return {"$ref": f"#/components/schemas/{component}", "components": convert(openapi["components"])}


def assert_matches(openapi: dict[str, Any], component: str, value: Any) -> None:
    jsonschema.validate(value, json_schema(openapi, component))


def jobs_in_every_shape() -> list[Job]:
    """A waiting job, a running one in the middle of a sampler, a failed one and a completed one with an output."""
    user = UserFactory.create()
    queued = JobFactory.create(user=user)
    running = JobFactory.create(user=user)
    services.job_transition(running, JobStatus.SUBMITTED)
    services.job_transition(running, JobStatus.RUNNING)
    Job.objects.filter(pk=running.pk).update(
        current_node_id="3",
        current_node_class="KSampler",
        current_node_name="KSampler",
        current_node_category="sampling",
        step_value=7,
        step_max=20,
        eta_finish_at=timezone.now() + timedelta(seconds=40),
        preview_at=timezone.now(),
    )
    failed = JobFactory.create(user=user)
    services.job_transition(failed, JobStatus.FAILED)
    Job.objects.filter(pk=failed.pk).update(
        failure_category=FailureCategory.NODE_ERROR, error_message="boom", error_details={"node_errors": {"3": []}}
    )
    completed = JobFactory.create(user=user)
    services.job_transition(completed, JobStatus.SUBMITTED)
    services.job_transition(completed, JobStatus.COMPLETED)
    output = JobOutput.objects.create(
        job=completed, node_id="9", kind="images", comfy_filename="fox.png", media_type="image/png", size_bytes=len(PNG)
    )
    output.file.save("fox.png", ContentFile(PNG))
    return [queued, running, failed, completed]


@pytest.mark.django_db
def test_rest_answers_match_the_schema(schema: dict[str, Any], settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path
    jobs = jobs_in_every_shape()
    api = APIClient()
    api.credentials(HTTP_X_API_KEY=api_key_for(jobs[0].user))  # type: ignore[arg-type]  # a user's job
    listed = api.get("/api/jobs/").json()
    assert_matches(schema, "PaginatedJobList", listed)
    states = {item["status"]: item for item in listed["results"]}
    assert states["running"]["step"] == {"value": 7.0, "max": 20.0} and states["running"]["eta"]["estimate"]
    assert states["failed"]["error"]["category"] == "node_error"
    assert states["completed"]["outputs"][0]["download_url"]
    for job in jobs:
        assert_matches(schema, "Job", api.get(f"/api/jobs/{job.id}/").json())
        assert_matches(schema, "JobTimeline", api.get(f"/api/jobs/{job.id}/events/").json())
    assert_matches(schema, "ValidationErrors", api.post("/api/jobs/", {"job_type": "image"}, format="json").json())
    assert_matches(schema, "ValidationErrors", api.get(f"/api/jobs/{jobs[0].id}/events/?after=x").json())
    assert_matches(schema, "Detail", api.post(f"/api/jobs/{jobs[3].id}/cancel/").json())
    group = JobGroup.objects.create(user=jobs[0].user, name="shot 12", tags=["keyframes"])
    Job.objects.filter(pk__in=[jobs[1].pk, jobs[3].pk]).update(group=group)
    assert_matches(schema, "PaginatedJobGroupList", api.get("/api/groups/").json())
    detail = api.get(f"/api/groups/{group.id}/").json()
    assert_matches(schema, "JobGroupDetail", detail)
    assert len(detail["jobs"]) == 2
    assert_matches(schema, "JobGroupDetail", api.post(f"/api/groups/{group.id}/cancel/").json())
    assert_matches(schema, "WsTicket", api.post("/api/ws-tickets/").json())
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    hook = api.post("/api/webhooks/", {"url": "http://127.0.0.1:9/hook", "events": ["job.completed"]}, format="json")
    assert_matches(schema, "NewWebhook", hook.json())
    assert_matches(schema, "PaginatedWebhookList", api.get("/api/webhooks/").json())
    assert_matches(schema, "NewSecret", api.post(f"/api/webhooks/{hook.json()['id']}/rotate-secret/").json())
    assert_matches(
        schema, "PaginatedWebhookDeliveryList", api.get(f"/api/webhooks/{hook.json()['id']}/deliveries/").json()
    )
    assert_matches(schema, "NewApiKey", api.post("/api/keys/", {"name": "schema"}, format="json").json())


@pytest.mark.django_db(transaction=True)
def test_websocket_messages_match_the_schema(schema: dict[str, Any], settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path
    queued, running, failed, completed = jobs_in_every_shape()
    key = api_key_for(queued.user)  # type: ignore[arg-type]  # a user's job

    async def scenario() -> list[tuple[str, Any]]:
        seen: list[tuple[str, Any]] = []
        for job in (queued, running, failed, completed):
            one = communicator(f"/ws/jobs/{job.id}/?after=0", with_key(key))
            assert (await one.connect())[0]
            seen.append(("WsJobSnapshot", await one.receive_json_from(timeout=5)))
            await one.disconnect()
        listing = communicator("/ws/jobs/", with_key(key))
        one = communicator(f"/ws/jobs/{queued.id}/", with_key(key))
        assert (await listing.connect())[0] and (await one.connect())[0]
        seen.append(("WsJobListSnapshot", await listing.receive_json_from(timeout=5)))
        seen.append(("WsJobSnapshot", await one.receive_json_from(timeout=5)))
        await database_sync_to_async(services.job_transition)(queued, JobStatus.SUBMITTED)
        seen.append(("WsJobListUpdate", await listing.receive_json_from(timeout=5)))
        seen.append(("WsJobUpdate", await one.receive_json_from(timeout=5)))
        await listing.disconnect()
        await one.disconnect()
        return seen

    seen = async_to_sync(scenario)()
    assert [name for name, _ in seen].count("WsJobUpdate") == 1 and len(seen[4][1]["jobs"]) == 2
    for component, message in seen:
        assert_matches(schema, component, message)


# --- served once, and the docs page ---------------------------------------------------------------


@pytest.mark.django_db
def test_the_served_schema_is_generated_once_and_is_what_the_generator_makes(schema: dict[str, Any]) -> None:
    project_schema.cache_clear()
    client = APIClient()
    first = client.get("/api/schema/?format=json")
    second = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi")
    assert first.status_code == second.status_code == 200
    assert first.json() == schema, "the same schema from any generation"
    assert second["Content-Type"].startswith("application/vnd.oai.openapi") and b"openapi: 3.0" in second.content
    assert (project_schema.cache_info().misses, project_schema.cache_info().hits) == (1, 1)


@pytest.mark.django_db
def test_the_docs_page_loads_only_files_of_our_own(client: Any) -> None:
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "://" not in html, "nothing from another origin: no CDN, no validator badge"
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(url.endswith("swagger-ui-bundle.js") for url in urls), urls
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        assert client.get(url).status_code == 200, url
    assert '"/api/schema/"' in html
