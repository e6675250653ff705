from __future__ import annotations

from django.db.models import QuerySet
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from access.openapi import DetailSerializer, file_responses
from access.pagination import NewestFirstPagination
from assets.media_types import RASTER_IMAGE_TYPES
from assets.serving import SERVED_MEDIA_TYPES
from jobs import dependencies, selectors, services
from jobs.downloads import output_response, preview_response, thumbnail_response
from jobs.filters import JobFilter
from jobs.models import FINAL_STATUSES, Job, JobStatus
from jobs.serializers import (
    JobAttemptSerializer,
    JobCreateSerializer,
    JobEventSerializer,
    JobSerializer,
    JobTimelineSerializer,
    TimelineQuerySerializer,
    labels_from,
)
from webhooks import selectors as webhook_selectors
from webhooks.serializers import WebhookDeliverySerializer, job_webhook_shown
from webhooks.services import job_webhook

EVENTS_PAGE_LIMIT = 1000


class JobCallbackSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    url = serializers.CharField()
    events = serializers.ListField(child=serializers.CharField())
    secret = serializers.CharField(help_text="signs its messages: shown in this answer only")


class NewJobSerializer(JobSerializer):
    webhook = JobCallbackSerializer(read_only=True, required=False, help_text="when the submission named one")

    class Meta(JobSerializer.Meta):
        fields = [*JobSerializer.Meta.fields, "webhook"]


# What the schema says of the answers that refuse an action on a job.
MAY_NOT_CHANGE = OpenApiResponse(
    DetailSerializer, description="someone else's job, without the permission to change jobs"
)


class JobCursorPagination(NewestFirstPagination):
    """Keyset pagination of jobs, newest first (access.pagination checks the client's cursor and size)."""


class JobViewSet(viewsets.GenericViewSet):
    serializer_class = JobSerializer
    pagination_class = JobCursorPagination
    filterset_class = JobFilter

    def get_queryset(self) -> QuerySet[Job]:
        return selectors.visible_jobs(self.request.user)

    @property
    def throttle_scope(self) -> str | None:
        """Submitting work has its own rate ("submit"), on top of the per-user one: a job costs
        GPU time, a read costs almost nothing."""
        return "submit" if getattr(self, "action", None) in ("create", "retry") else None

    def _refuse_unless_may_change(self, job: Job) -> Response | None:
        if selectors.may_change_job(self.request.user, job):
            return None
        return Response(
            {"detail": "only its owner, or staff with the permission to change jobs, may do this"},
            status=status.HTTP_403_FORBIDDEN,
        )

    def list(self, request: Request) -> Response:
        jobs = self.filter_queryset(self.get_queryset()).prefetch_related("outputs")
        page = self.paginate_queryset(jobs)
        return self.get_paginated_response(selectors.job_states(list(jobs) if page is None else page))

    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        return Response(selectors.job_state(self.get_object()))

    @extend_schema(
        request=JobCreateSerializer,
        responses={201: NewJobSerializer},
        description="Validates the workflow (ComfyUI API format, bounded size, nodes, steps, resolution, "
        "frames, batch; asset references; references to other jobs' outputs, `output:<job id>/<n>`) and "
        "queues the job, or holds it `blocked` until the jobs it reads from complete. `websocket_url` is "
        "absolute here.",
    )
    def create(self, request: Request) -> Response:
        incoming = JobCreateSerializer(data=request.data, context={"user": request.user})
        incoming.is_valid(raise_exception=True)
        data = incoming.validated_data
        problems = dependencies.output_reference_problems(data["workflow"], request.user)
        if problems:
            raise serializers.ValidationError({"workflow": problems})
        job = services.job_create(
            user=request.user,
            workflow=data["workflow"],
            job_type=data["job_type"],
            priority=data["priority"],
            backend=data.get("backend"),
            requires=data.get("requires", []),
            labels=labels_from(data),
            webhook=data.get("webhook"),
        )
        body = selectors.job_state(job)
        body["websocket_url"] = self._websocket_url(request, job)
        hook = job_webhook(job.id) if data.get("webhook") else None
        if hook is not None:
            body["webhook"] = job_webhook_shown(hook)  # its secret: in this answer only
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=None,
        responses={
            200: OpenApiResponse(JobSerializer, description="it was waiting: cancelled at once"),
            202: OpenApiResponse(JobSerializer, description="it is running: ComfyUI is told to stop it"),
            403: MAY_NOT_CHANGE,
            409: OpenApiResponse(DetailSerializer, description="it has ended already"),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        job = self.get_object()
        refused = self._refuse_unless_may_change(job)
        if refused is not None:
            return refused
        if job.status in FINAL_STATUSES:
            return Response(
                {"detail": f"job is already {job.status}; nothing to cancel"}, status=status.HTTP_409_CONFLICT
            )
        job = services.job_cancel(job)
        code = status.HTTP_200_OK if job.status in FINAL_STATUSES else status.HTTP_202_ACCEPTED
        return Response(selectors.job_state(job), status=code)

    @extend_schema(
        parameters=[OpenApiParameter("output_id", int, OpenApiParameter.PATH, description="an output's `id`")],
        responses=file_responses(SERVED_MEDIA_TYPES, "the file: inert media inline, anything else as an attachment"),
    )
    @action(detail=True, methods=["get"], url_path=r"outputs/(?P<output_id>\d+)", url_name="output-download")
    def output_download(
        self, request: Request, pk: str | None = None, output_id: str | None = None
    ) -> HttpResponseBase:
        job = self.get_object()
        return output_response(request, get_object_or_404(job.outputs, pk=output_id))

    @extend_schema(
        parameters=[OpenApiParameter("output_id", int, OpenApiParameter.PATH, description="an output's `id`")],
        responses=file_responses(["image/webp"], "a small WebP of the output (404 when it has none)"),
    )
    @action(
        detail=True,
        methods=["get"],
        url_path=r"outputs/(?P<output_id>\d+)/thumbnail",
        url_name="output-thumbnail",
    )
    def output_thumbnail(
        self, request: Request, pk: str | None = None, output_id: str | None = None
    ) -> HttpResponseBase:
        job = self.get_object()
        return thumbnail_response(request, get_object_or_404(job.outputs, pk=output_id))

    @extend_schema(
        request=None,
        responses={
            201: OpenApiResponse(JobSerializer, description="the new job"),
            200: OpenApiResponse(JobSerializer, description="retried before: that same new job"),
            403: MAY_NOT_CHANGE,
            409: OpenApiResponse(DetailSerializer, description="only failed or cancelled jobs are retried"),
        },
    )
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str | None = None) -> Response:
        """201 with the new job; 200 with the same one when the job was already retried."""
        job = self.get_object()
        refused = self._refuse_unless_may_change(job)
        if refused is not None:
            return refused
        if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
            return Response(
                {"detail": f"only failed or cancelled jobs can be retried; this one is {job.status}"},
                status=status.HTTP_409_CONFLICT,
            )
        new_job, created = services.job_retry_get_or_create(job)
        return Response(selectors.job_state(new_job), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(parameters=[TimelineQuerySerializer], responses=JobTimelineSerializer)
    @action(detail=True, methods=["get"])
    def events(self, request: Request, pk: str | None = None) -> Response:
        """The timeline after `?after=<seq>` (default: from the start), oldest first."""
        job = self.get_object()
        query = TimelineQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        after = query.validated_data.get("after") or 0
        events = list(job.events.filter(seq__gt=after).order_by("seq")[: EVENTS_PAGE_LIMIT + 1])
        return Response(
            {
                "job": str(job.id),
                "seq": job.seq,
                "events": JobEventSerializer(events[:EVENTS_PAGE_LIMIT], many=True).data,
                "more": len(events) > EVENTS_PAGE_LIMIT,
            }
        )

    @extend_schema(responses=JobAttemptSerializer(many=True))
    # Every attempt at once (a handful): no page, and no list filters on the one job it reads.
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def attempts(self, request: Request, pk: str | None = None) -> Response:
        job = self.get_object()
        return Response(JobAttemptSerializer(job.attempts.all(), many=True).data)

    @extend_schema(responses=file_responses(sorted(RASTER_IMAGE_TYPES), "the latest preview image"))
    @action(detail=True, methods=["get"])
    def preview(self, request: Request, pk: str | None = None) -> HttpResponseBase:
        """The latest live preview of a running job (what the sampler shows at its current step)."""
        return preview_response(request, self.get_object())

    @extend_schema(responses=WebhookDeliverySerializer(many=True))
    @action(detail=True, methods=["get"], url_path="webhook-deliveries", pagination_class=None, filter_backends=[])
    def webhook_deliveries(self, request: Request, pk: str | None = None) -> Response:
        """Every attempt at sending this job's events to your webhooks (its own callback, your
        subscriptions), newest first, with the receiver's status code."""
        job = self.get_object()
        deliveries = webhook_selectors.job_deliveries(job.id, request.user)
        return Response(WebhookDeliverySerializer(deliveries, many=True).data)

    def _websocket_url(self, request: Request, job: Job) -> str:
        scheme = "wss" if request.is_secure() else "ws"
        return f"{scheme}://{request.get_host()}/ws/jobs/{job.id}/"
