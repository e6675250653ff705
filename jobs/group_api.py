"""`/api/groups/`: groups of jobs (a template's batch): one id, one progress, one status, one cancel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
        return group_cancel_response(request, self.get_object(), selectors.group_state, noun="group")


def group_cancel_response(
    request: Request, group: JobGroup, state_of: Callable[[JobGroup], dict[str, Any]], *, noun: str
) -> Response:
    """Cancel what still runs of a group (a batch or a pipeline, `noun`) for a user who may: 200
    when all of it has ended now, 202 while running jobs are being stopped, 403, or 409 when
    nothing was left to cancel; the answer is the group's state as `state_of` shapes it."""
    if not selectors.may_change_group(request.user, group):
        return Response(
            {"detail": "only its owner, or staff with the permission to change jobs, may do this"},
            status=status.HTTP_403_FORBIDDEN,
        )
    if not groups.job_group_cancel(group):
        return Response({"detail": f"every job of the {noun} has already ended"}, status=status.HTTP_409_CONFLICT)
    state = state_of(group)
    code = status.HTTP_200_OK if state["status"] in FINAL_STATUSES else status.HTTP_202_ACCEPTED
    return Response(state, status=code)
