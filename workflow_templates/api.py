"""`/api/templates/`: publish workflow templates, read their versions and input schemas, run them."""

from __future__ import annotations

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from access.openapi import DetailSerializer
from jobs import selectors as job_selectors
from jobs.serializers import JobGroupDetailSerializer, JobSerializer, labels_from
from workflow_templates import selectors, services
from workflow_templates.models import TEMPLATE_NAME_PATTERN, TemplateVersion, WorkflowTemplate
from workflow_templates.serializers import (
    TemplatePublishSerializer,
    TemplateRunSerializer,
    TemplateSerializer,
    TemplateVersionBriefSerializer,
    TemplateVersionSerializer,
)

# What a run answers: one job, or the group a batch made.
RUN_RESULT = PolymorphicProxySerializer(
    component_name="TemplateRunResult",
    serializers=[JobSerializer, JobGroupDetailSerializer],
    resource_type_field_name=None,
)


class TemplateViewSet(viewsets.GenericViewSet):
    serializer_class = TemplateVersionSerializer
    lookup_field = "name"
    lookup_value_regex = TEMPLATE_NAME_PATTERN

    def get_queryset(self) -> QuerySet[WorkflowTemplate]:
        return selectors.visible_templates(self.request.user)

    @property
    def throttle_scope(self) -> str | None:
        """Running a template submits work: the submit rate, as for POST /api/jobs/."""
        return "submit" if getattr(self, "action", None) == "jobs" else None

    @extend_schema(responses=TemplateSerializer(many=True))
    def list(self, request: Request) -> Response:
        """The templates you may run, by name, each with its latest version's number."""
        return Response(TemplateSerializer(self.get_queryset(), many=True).data)

    @extend_schema(
        request=TemplatePublishSerializer,
        responses={
            201: TemplateVersionSerializer,
            403: OpenApiResponse(DetailSerializer, description="publishing is for staff with the permission"),
        },
    )
    def create(self, request: Request) -> Response:
        """Publish: version 1 of a new name, or the next version of an existing one (201 with it)."""
        if not selectors.may_publish(request.user):
            return Response(
                {"detail": "publishing needs staff status and the permission to add workflow templates"},
                status=status.HTTP_403_FORBIDDEN,
            )
        incoming = TemplatePublishSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        version = services.template_publish(user=request.user, **incoming.validated_data)
        return Response(TemplateVersionSerializer(version).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request: Request, name: str | None = None) -> Response:
        """The latest version: its inputs, their JSON Schema, its workflow."""
        template = self.get_object()
        return Response(TemplateVersionSerializer(self._version(template, template.latest_version)).data)

    @extend_schema(responses=TemplateVersionBriefSerializer(many=True), operation_id="templates_versions_list")
    @action(detail=True, methods=["get"], url_path="versions", url_name="versions")
    def versions(self, request: Request, name: str | None = None) -> Response:
        """Every version, newest first."""
        versions = selectors.template_versions(self.get_object()).select_related("template", "published_by")
        return Response(TemplateVersionBriefSerializer(versions, many=True).data)

    @extend_schema(
        parameters=[OpenApiParameter("number", int, OpenApiParameter.PATH, description="a version's number")]
    )
    @action(detail=True, methods=["get"], url_path=r"versions/(?P<number>[0-9]{1,9})", url_name="version")
    def version(self, request: Request, name: str | None = None, number: str | None = None) -> Response:
        return Response(TemplateVersionSerializer(self._version(self.get_object(), int(number or 0))).data)

    @extend_schema(
        request=TemplateRunSerializer,
        responses={201: OpenApiResponse(RUN_RESULT, description="`inputs`: the job; `batch`: the group of jobs")},
    )
    @action(detail=True, methods=["post"])
    def jobs(self, request: Request, name: str | None = None) -> Response:
        """Run: `inputs` makes one job (201 with it); `batch` makes a group of jobs (201 with the group)."""
        template = self.get_object()
        incoming = TemplateRunSerializer(data=request.data, context={"template": template, "user": request.user})
        incoming.is_valid(raise_exception=True)
        data = incoming.validated_data
        version, runs = data["version"], data["runs"]
        common = {
            "user": request.user,
            "version": version,
            "priority": data["priority"],
            "backend": data.get("backend"),
        }
        if "batch" in data:
            group = services.template_group_create(**common, runs=runs, labels=labels_from(data))
            return Response(job_selectors.group_state(group), status=status.HTTP_201_CREATED)
        job = services.template_job_create(**common, run=runs[0])
        body = job_selectors.job_state(job)
        scheme = "wss" if request.is_secure() else "ws"
        body["websocket_url"] = f"{scheme}://{request.get_host()}/ws/jobs/{job.id}/"
        return Response(body, status=status.HTTP_201_CREATED)

    def _version(self, template: WorkflowTemplate, number: int) -> TemplateVersion:
        versions = TemplateVersion.objects.select_related("template", "published_by")
        return get_object_or_404(versions, template=template, number=number)
