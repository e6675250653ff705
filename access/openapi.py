"""The OpenAPI schema's shared parts: how a client authenticates, and the error answers every
endpoint shares (401, 403, 404, 429 with `detail`; 400 with the reasons), added to each operation
by `ProjectAutoSchema` so that no view can forget them.

Each app documents its own endpoints with `extend_schema` next to the view; access/docs.py serves
the schema and its docs page. This module is DRF's DEFAULT_SCHEMA_CLASS's: it must not import
drf_spectacular.views, which imports it back.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from drf_spectacular.contrib.django_filters import DjangoFilterExtension
from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse
from rest_framework import permissions, serializers
from rest_framework.authentication import SessionAuthentication


class DetailSerializer(serializers.Serializer):
    """Why the request was refused, in one sentence."""

    detail = serializers.CharField()


class ValidationErrorsSerializer(serializers.Serializer):
    """A 400: each refused field with its reasons (`{"workflow": ["node 3: ..."]}`), or `detail`
    for a body that could not be read at all (not JSON, nested too deep, a NUL character)."""


class ValidationErrorsSchema(OpenApiSerializerExtension):
    # DRF's error bodies are keyed by the request's own field names: a map, not fixed properties.
    target_class = ValidationErrorsSerializer

    def map_serializer(self, auto_schema: AutoSchema, direction: str) -> dict[str, Any]:
        reasons = {"type": "array", "items": {"type": "string"}}
        return {
            "type": "object",
            "description": ValidationErrorsSerializer.__doc__,
            "properties": {
                "detail": {"type": "string", "description": "the body as a whole was refused"},
                "non_field_errors": {**reasons, "description": "refused for a reason no single field has"},
            },
            "additionalProperties": {
                "description": "the reasons one field (or query parameter) was refused",
                "oneOf": [reasons, {"type": "object", "additionalProperties": True}, {"type": "string"}],
            },
        }


class EmptyMeansAnyFilter(DjangoFilterExtension):
    """django-filter ignores a list filter given empty (`?status=`): the schema says so, so that it
    allows exactly what the API accepts."""

    priority = 1

    def get_schema_operation_parameters(self, auto_schema: AutoSchema, *args: Any, **kwargs: Any) -> list[Any]:
        parameters: list[Any] = super().get_schema_operation_parameters(auto_schema, *args, **kwargs)
        for parameter in parameters:
            schema = parameter.get("schema", {})
            if "enum" in schema:
                schema["enum"] = [*schema["enum"], ""] if "" not in schema["enum"] else schema["enum"]
            elif schema.get("type") != "string" or "format" in schema or "pattern" in schema:
                parameter["schema"] = {"anyOf": [schema, {"type": "string", "maxLength": 0}]}
            else:
                continue  # a plain string: empty is one of its values already
            parameter["description"] = f"empty or left out: any\n\n{parameter.get('description', '')}".strip()
        return parameters


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """access.authentication.ApiKeyAuthentication reads a key from either of two headers."""

    target_class = "access.authentication.ApiKeyAuthentication"
    name = ["ApiKeyAuth", "BearerAuth"]

    def get_security_requirement(self, auto_schema: AutoSchema) -> list[dict[str, list[Any]]]:
        return [{"ApiKeyAuth": []}, {"BearerAuth": []}]  # either one

    def get_security_definition(self, auto_schema: AutoSchema) -> list[dict[str, Any]]:
        return [
            {
                "type": "apiKey",
                "in": "header",
                "name": "X-API-Key",
                "description": "An API key (`manage.py create_api_key`, or `POST /api/keys/`).",
            },
            {
                "type": "http",
                "scheme": "bearer",
                "description": "The same API key as `Authorization: Bearer <key>`.",
            },
        ]


RETRY_AFTER = {
    "schema": {"type": "integer", "minimum": 0},
    "description": "seconds to wait before the next request",
    "required": True,
}

# What each shared error means; views add their own reasons (a 403 for someone else's job) with
# extend_schema, and those win.
ERROR_DESCRIPTIONS = {
    "400": "refused input: the reasons, per field",
    "401": "no credentials, or an unknown, expired or revoked API key",
    "403": "not allowed: a user without the permission, or a session request without its CSRF token",
    "404": "no such object, or one you may not see",
    "429": "too many requests: wait `Retry-After` seconds",
}


class ProjectAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, plus the error answers that follow from a view's setup:
    401 where credentials are needed, 403 where a permission or CSRF can refuse, 404 on a path
    with an id, 429 (with Retry-After) wherever a throttle counts, 400 where input is read."""

    def get_operation(self, path: str, path_regex: str, path_prefix: str, method: str, registry: Any) -> Any:
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if not operation:
            return operation
        responses = operation["responses"]
        for code in self.shared_error_codes(operation):
            responses.setdefault(code, self.error_response(code))
        if "429" in responses:
            responses["429"].setdefault("headers", {})["Retry-After"] = RETRY_AFTER
        return operation

    def shared_error_codes(self, operation: dict[str, Any]) -> list[str]:
        codes = []
        if operation.get("requestBody") or any(p["in"] == "query" for p in operation.get("parameters", [])):
            codes.append("400")
        if self.needs_credentials():
            codes.append("401")
            if self.method not in permissions.SAFE_METHODS and self.takes_sessions():
                codes.append("403")
        if "{" in self.path:
            codes.append("404")
        if self.view.get_throttles():
            codes.append("429")
        return codes

    def needs_credentials(self) -> bool:
        return not any(isinstance(p, permissions.AllowAny) for p in self.view.get_permissions())

    def takes_sessions(self) -> bool:
        return any(isinstance(a, SessionAuthentication) for a in self.view.get_authenticators())

    def error_response(self, code: str) -> dict[str, Any]:
        body = ValidationErrorsSerializer if code == "400" else DetailSerializer
        return {
            "description": ERROR_DESCRIPTIONS[code],
            "content": {"application/json": {"schema": self.resolve_serializer(body, "response").ref}},
        }


def file_responses(media_types: Iterable[str], description: str) -> dict[tuple[int, str], OpenApiResponse]:
    """A 200 whose body is a file of one of `media_types` (extend_schema's `responses`)."""
    return {
        (200, media_type): OpenApiResponse(OpenApiTypes.BINARY, description=description) for media_type in media_types
    }
