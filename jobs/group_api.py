"""`/api/groups/`: groups of jobs (a template's batch): one id, one progress, one status, one cancel."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from access.openapi import DetailSerializer
from access.pagination import NewestFirstPagination
from jobs import groups, selectors
from jobs.filters import JobGroupFilter
from jobs.models import FINAL_STATUSES, JobGroup
from jobs.serializers import JobGroupDetailSerializer, JobGroupSerializer


class JobGroupViewSet(viewsets.GenericViewSet):
    serializer_class = JobGroupDetailSerializer
    pagination_class = NewestFirstPagination
    filterset_class = JobGroupFilter

    def get_queryset(self) -> QuerySet[JobGroup]:
        return selectors.visible_groups(self.request.user)

    @extend_schema(responses=JobGroupSerializer(many=True))
    def list(self, request: Request) -> Response:
        """Your groups, newest first, summed up (without their jobs: each group's page lists them)."""
        found = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(found)
        return self.get_paginated_response(selectors.group_states(list(found) if page is None else page))

    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        return Response(selectors.group_state(self.get_object()))

    @extend_schema(
        request=None,
        responses={
            200: OpenApiResponse(JobGroupDetailSerializer, description="every job of it has ended now"),
            202: OpenApiResponse(JobGroupDetailSerializer, description="running jobs are being stopped"),
            403: OpenApiResponse(DetailSerializer, description="someone else's group, without the permission"),
            409: OpenApiResponse(DetailSerializer, description="every job of it had ended already"),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Cancel every job of the group still waiting or running: 200 when all have ended now, 202
        while running ones are being stopped by their trackers, 409 when nothing was left to cancel."""
        group = self.get_object()
        if not selectors.may_change_group(request.user, group):
            return Response(
                {"detail": "only its owner, or staff with the permission to change jobs, may do this"},
                status=status.HTTP_403_FORBIDDEN,
            )
        if not groups.job_group_cancel(group):
            return Response({"detail": "every job of the group has already ended"}, status=status.HTTP_409_CONFLICT)
        state = selectors.group_state(group)
        code = status.HTTP_200_OK if state["status"] in FINAL_STATUSES else status.HTTP_202_ACCEPTED
        return Response(state, status=code)
