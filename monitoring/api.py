from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from access.openapi import DetailSerializer
from monitoring.failure_stats import failure_category_counts
from monitoring.permissions import ViewsFleet
from monitoring.serializers import GenerationStatsSerializer, StatsQuerySerializer
from monitoring.stats import generation_stats


class StatsView(APIView):
    """GET /api/stats/?days=1|7|30|90: the generation statistics page's figures, as JSON, and the
    failed jobs per category (`failures_by_category`, as on the failures page)."""

    permission_classes = [ViewsFleet]

    @extend_schema(
        parameters=[StatsQuerySerializer],
        responses={
            200: GenerationStatsSerializer,
            403: OpenApiResponse(DetailSerializer, description="only staff who may view jobs see fleet-wide figures"),
        },
        summary="Generation statistics",
    )
    def get(self, request: Request) -> Response:
        query = StatsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        days = query.validated_data["days"]
        body = generation_stats(days=days)
        body["failures_by_category"] = failure_category_counts(days=days)
        return Response(body)
