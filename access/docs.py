"""`/api/schema/` (OpenAPI 3, YAML or JSON by content negotiation) and `/api/docs/` (Swagger UI,
its files served from our own static files by drf-spectacular-sidecar: no CDN)."""

from __future__ import annotations

from functools import cache
from typing import Any

from django.utils import translation
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.request import Request
from rest_framework.response import Response


@cache
def project_schema(language: str | None) -> dict[str, Any]:
    """Generated once per process and language: the schema depends on code and settings alone
    (never on the request or the user), and generating it walks every view and serializer."""
    return SchemaGenerator().get_schema(request=None, public=True)


class SchemaView(SpectacularAPIView):
    def _get_schema_response(self, request: Request) -> Response:
        # drf-spectacular's view generates the schema on every request; this one reuses it.
        schema = project_schema(translation.get_language())
        filename = self._get_filename(request, None)
        return Response(data=schema, headers={"Content-Disposition": f'inline; filename="{filename}"'})


class DocsView(SpectacularSwaggerView):
    url_name = "api-schema"
