from __future__ import annotations

from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from monitoring.failure_stats import failure_category_counts
from monitoring.permissions import ViewsFleet
from monitoring.stats import generation_stats, window_days


class StatsView(APIView):
    """GET /api/stats/?days=1|7|30|90: the generation statistics page's figures, as JSON, and the
    failed jobs per category (`failures_by_category`, as on the failures page)."""

    permission_classes = [ViewsFleet]

    def get(self, request: Request) -> Response:
        days = window_days(request.query_params.get("days"))
        body = generation_stats(days=days)
        body["failures_by_category"] = failure_category_counts(days=days)
        return Response(body)
