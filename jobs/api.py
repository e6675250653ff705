from __future__ import annotations

from django.db.models import QuerySet
from django.http import FileResponse
from django.shortcuts import get_object_or_404
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response

from jobs import selectors, services
from jobs.downloads import output_response, preview_response
from jobs.models import FINAL_STATUSES, Job, JobStatus
from jobs.serializers import JobAttemptSerializer, JobCreateSerializer, JobEventSerializer, JobSerializer

EVENTS_PAGE_LIMIT = 1000


class JobCursorPagination(CursorPagination):
    # Keyset pagination: constant time at any depth, where OFFSET 500000 took 1.8 s (docs/HAZARDS.md).
    ordering = "-created_at"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class JobViewSet(viewsets.GenericViewSet):
    serializer_class = JobSerializer
    pagination_class = JobCursorPagination
    filterset_fields = ["status", "job_type", "backend", "failure_category"]

    def get_queryset(self) -> QuerySet[Job]:
        return selectors.visible_jobs(self.request.user)

    def list(self, request: Request) -> Response:
        jobs = self.filter_queryset(self.get_queryset()).prefetch_related("outputs")
        page = self.paginate_queryset(jobs)
        return self.get_paginated_response(selectors.job_states(list(jobs) if page is None else page))

    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        return Response(selectors.job_state(self.get_object()))

    def create(self, request: Request) -> Response:
        incoming = JobCreateSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        job = services.job_create(user=request.user, **incoming.validated_data)
        body = selectors.job_state(job)
        body["websocket_url"] = self._websocket_url(request, job)
        return Response(body, status=status.HTTP_201_CREATED)

    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        job = self.get_object()
        if job.status in FINAL_STATUSES:
            return Response(
                {"detail": f"job is already {job.status}; nothing to cancel"}, status=status.HTTP_409_CONFLICT
            )
        job = services.job_cancel(job)
        code = status.HTTP_200_OK if job.status in FINAL_STATUSES else status.HTTP_202_ACCEPTED
        return Response(selectors.job_state(job), status=code)

    @action(detail=True, methods=["get"], url_path=r"outputs/(?P<output_id>\d+)", url_name="output-download")
    def output_download(self, request: Request, pk: str | None = None, output_id: str | None = None) -> FileResponse:
        job = self.get_object()
        return output_response(get_object_or_404(job.outputs, pk=output_id))

    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str | None = None) -> Response:
        job = self.get_object()
        if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
            return Response(
                {"detail": f"only failed or cancelled jobs can be retried; this one is {job.status}"},
                status=status.HTTP_409_CONFLICT,
            )
        new_job = services.job_retry(job)
        return Response(selectors.job_state(new_job), status=status.HTTP_201_CREATED)

    @action(detail=True, methods=["get"])
    def events(self, request: Request, pk: str | None = None) -> Response:
        """The timeline after `?after=<seq>` (default: from the start), oldest first."""
        job = self.get_object()
        after = request.query_params.get("after", "0")
        if not after.isdigit():
            return Response({"detail": "after must be a non-negative integer"}, status=status.HTTP_400_BAD_REQUEST)
        events = list(job.events.filter(seq__gt=int(after)).order_by("seq")[: EVENTS_PAGE_LIMIT + 1])
        return Response(
            {
                "job": str(job.id),
                "seq": job.seq,
                "events": JobEventSerializer(events[:EVENTS_PAGE_LIMIT], many=True).data,
                "more": len(events) > EVENTS_PAGE_LIMIT,
            }
        )

    @action(detail=True, methods=["get"])
    def attempts(self, request: Request, pk: str | None = None) -> Response:
        job = self.get_object()
        return Response(JobAttemptSerializer(job.attempts.all(), many=True).data)

    @action(detail=True, methods=["get"])
    def preview(self, request: Request, pk: str | None = None) -> FileResponse:
        """The latest live preview of a running job (what the sampler shows at its current step)."""
        return preview_response(self.get_object())

    def _websocket_url(self, request: Request, job: Job) -> str:
        scheme = "wss" if request.is_secure() else "ws"
        return f"{scheme}://{request.get_host()}/ws/jobs/{job.id}/"
