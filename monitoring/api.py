from __future__ import annotations

from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from monitoring.permissions import ViewsFleet
from monitoring.stats import generation_stats, window_days


class StatsView(APIView):
    """GET /api/stats/?days=1|7|30|90: the generation statistics page's figures, as JSON."""

    permission_classes = [ViewsFleet]

    def get(self, request: Request) -> Response:
        return Response(generation_stats(days=window_days(request.query_params.get("days"))))
