"""GET /api/quotas/me/ (one's own usage and limits) and GET /api/quotas/ (everyone's, staff with the
permission). Read-only: limits are set in settings and the admin."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from django.conf import settings
from django.core.paginator import EmptyPage, Paginator
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from access.openapi import DetailSerializer
from quotas.limits import at_limit, default_limits, limits_from, user_quota_fields
from quotas.overview import UserUsage, usage_overview, user_week_usage
from quotas.permissions import ViewsUsage
from quotas.serializers import MyQuotaSerializer, UsagePageSerializer, UsageQuerySerializer
from quotas.usage import utc_day_start


def user_usage_body(row: UserUsage) -> dict[str, Any]:
    return {
        "user_id": row.user_id,
        "username": row.username,
        "usage": asdict(row.usage),
        "limits": asdict(row.limits),
        "own_limits": row.own_limits,
        "used_fractions": row.used_fractions,
        "closeness": row.closeness,
    }


class MyQuotaView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses={200: MyQuotaSerializer}, summary="My usage and limits")
    def get(self, request: Request) -> Response:
        now = timezone.now()
        user = request.user
        user_id = user.pk
        assert user_id is not None  # IsAuthenticated: a user with a row of their own
        own = user_quota_fields(user_id)
        limits = limits_from(own, default_limits())
        usage = user_week_usage(user_id, now=now)
        row = UserUsage(
            user_id=user_id,
            username=user.get_username(),
            usage=usage,
            limits=limits,
            own_limits=own is not None,
        )
        body = user_usage_body(row)
        body["over_limit"] = settings.QUOTA_OVER_LIMIT
        body["day_started_at"] = utc_day_start(now)
        body["may_start_now"] = not (
            at_limit(usage.running, limits.max_running_jobs)
            or at_limit(usage.gpu_seconds_today, limits.gpu_seconds_per_day)
        )
        return Response(MyQuotaSerializer(body).data)


class QuotaListView(APIView):
    permission_classes = [ViewsUsage]

    @extend_schema(
        parameters=[UsageQuerySerializer],
        responses={
            200: UsagePageSerializer,
            403: OpenApiResponse(DetailSerializer, description="only staff who may view usage see everyone's"),
        },
        summary="Every user's usage and limits",
    )
    def get(self, request: Request) -> Response:
        # A plain dict: from a QueryDict DRF reads "?ordering=" as not given; it is a 400 (as the schema says).
        query = UsageQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        rows = usage_overview(now=timezone.now(), sort=query.validated_data["ordering"])
        paginator = Paginator(rows, query.validated_data["page_size"], allow_empty_first_page=True)
        try:
            page = paginator.page(query.validated_data["page"])
        except EmptyPage:
            raise NotFound(f"no page {query.validated_data['page']}; there are {paginator.num_pages}") from None
        body = {
            "count": paginator.count,
            "page": page.number,
            "pages": paginator.num_pages,
            "results": [user_usage_body(row) for row in page.object_list],
        }
        return Response(body)
