"""`/api/pipelines/`: shot pipelines, jobs that read each other's outputs (jobs.pipelines): one id,
one status and progress, one ETA along the critical path, one cancel.

Here, above the templates, because a pipeline's job is a workflow or a template run (a template, its
inputs, a version): a keyframe template feeding an image-to-video template.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from access.openapi import DetailSerializer
from access.pagination import NewestFirstPagination
from access.parsers import SingleValuedFields
from assets.selectors import asset_reference_problems
from jobs import dependencies
from jobs.filters import JobGroupFilter
from jobs.group_api import group_cancel_response
from jobs.models import JobGroup
from jobs.pipeline_states import pipeline_state, pipeline_states, visible_pipelines
from jobs.pipelines import PipelineNode, pipeline_create, pipeline_problems
from jobs.serializers import JobGroupSerializer, JobLabelsSerializer, WorkflowField, labels_from
from jobs.workflow_validation import workflow_problems
from workflow_templates.inputs import filled_workflow, run_values, stored_inputs
from workflow_templates.models import TemplateVersion
from workflow_templates.selectors import asset_input_problems, template_version, visible_templates
from workflow_templates.serializers import CountedListField

KEY_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}\Z")


class PipelineJobCreateSerializer(JobLabelsSerializer):
    """One job of a pipeline: its key; its workflow, or a template with its inputs (either may read
    other jobs' outputs as "output:<key>/<n>"); and what differs from the pipeline's defaults."""

    key = serializers.CharField(max_length=64, help_text="a letter, then letters, digits, _ or -")
    workflow = WorkflowField(required=False, help_text="or `template` and `inputs`")
    template = serializers.CharField(max_length=64, required=False, help_text="a workflow template's name")
    inputs = serializers.JSONField(required=False, default=dict, help_text="the template's input values")
    version = serializers.IntegerField(
        min_value=1, max_value=2**31 - 1, required=False, help_text="the template's version; default: the latest"
    )
    job_type = serializers.CharField(max_length=32, required=False, help_text="default: the pipeline's")
    priority = serializers.IntegerField(min_value=0, max_value=9, required=False, help_text="default: the pipeline's")
    backend = serializers.CharField(max_length=64, required=False, allow_blank=True)

    def validate_key(self, value: str) -> str:
        if not KEY_PATTERN.match(value) or _is_job_id(value):
            raise serializers.ValidationError(
                "a key is a letter, then up to 63 letters, digits, _ or -, and not a job id"
            )
        return value

    def validate_job_type(self, value: str) -> str:
        return _known_job_type(value)

    def validate_backend(self, value: str) -> str | None:
        if value and value not in settings.COMFYUI_BACKENDS:
            raise serializers.ValidationError(
                f"unknown backend {value!r}; configured: {sorted(settings.COMFYUI_BACKENDS)}"
            )
        return value or None

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("workflow" in attrs) == ("template" in attrs):
            raise serializers.ValidationError({"workflow": "give a workflow, or a template and its inputs (not both)"})
        if "template" in attrs:
            attrs = {**attrs, **self._template_run(attrs)}
        problems = asset_reference_problems(attrs["workflow"], self.context.get("user"))
        if problems:
            raise serializers.ValidationError({"workflow": problems})
        return attrs

    def _template_run(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """The template's version filled with the inputs, checked as a template run checks it."""
        user = self.context.get("user")
        template = visible_templates(user).filter(name=attrs["template"]).first()
        if template is None:
            raise serializers.ValidationError({"template": f"no template {attrs['template']!r} you may run"})
        version = template_version(template, attrs.get("version"))
        if version is None:
            raise serializers.ValidationError(
                {"version": f"{template.name} has versions 1 to {template.latest_version}"}
            )
        specs = stored_inputs(version.inputs)
        values, problems = run_values(specs, attrs["inputs"])
        problems = problems or asset_input_problems(specs, [values], user)[0]
        if problems:
            raise serializers.ValidationError({"inputs": problems.get("", problems)})
        workflow = filled_workflow(version.workflow, specs, values)
        problems_of_workflow = workflow_problems(workflow)
        if problems_of_workflow:
            raise serializers.ValidationError({"workflow": problems_of_workflow})
        return {"workflow": workflow, "template_version": version, "name": attrs.get("name") or template.name}


def _template_job_type(job: dict[str, Any]) -> str:
    version: TemplateVersion | None = job.get("template_version")
    return version.job_type if version is not None else ""


def _is_job_id(key: str) -> bool:
    try:
        uuid.UUID(key)
    except ValueError:
        return False
    return True


def _known_job_type(value: str) -> str:
    if value not in settings.JOB_TYPES:
        raise serializers.ValidationError(f"unknown job type {value!r}; expected one of {settings.JOB_TYPES}")
    return value


class PipelineCreateSerializer(SingleValuedFields, JobLabelsSerializer):
    """The pipeline's labels and defaults, and its jobs. Checked as a graph after each job is:
    keys unique, every "output:<key>/<n>" naming another job of it, no cycle."""

    job_type = serializers.CharField(max_length=32, required=False, help_text="each job's, unless it says")
    priority = serializers.IntegerField(min_value=0, max_value=9, default=5)
    jobs = CountedListField(
        setting="PIPELINE_MAX_JOBS", whole="a pipeline", items="jobs", child=PipelineJobCreateSerializer()
    )

    def validate_job_type(self, value: str) -> str:
        return _known_job_type(value)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        types: dict[str, str] = {
            job["key"]: job.get("job_type") or _template_job_type(job) or attrs.get("job_type") or ""
            for job in attrs["jobs"]
        }
        untyped = [key for key, job_type in types.items() if not job_type]
        if untyped:
            raise serializers.ValidationError({"job_type": f"no job_type for the jobs {', '.join(untyped)}"})
        nodes = [
            PipelineNode(
                key=job["key"],
                workflow=job["workflow"],
                job_type=types[job["key"]],
                priority=job.get("priority", attrs["priority"]),
                backend=job.get("backend"),
                labels=labels_from(job),
                template_name=job["template_version"].template.name if "template_version" in job else "",
                template_version=job["template_version"].number if "template_version" in job else None,
            )
            for job in attrs["jobs"]
        ]
        problems = pipeline_problems(nodes)
        keys = [node.key for node in nodes]
        for node in [] if problems else nodes:
            found = dependencies.output_reference_problems(node.workflow, self.context.get("user"), known_keys=keys)
            problems += [f"job {node.key!r}: {problem}" for problem in found]
        if problems:
            raise serializers.ValidationError({"jobs": problems})
        return {**attrs, "nodes": nodes}


class PipelineJobSerializer(serializers.Serializer):
    """One job of a pipeline, in brief: its full state is at `url`."""

    key = serializers.CharField()
    id = serializers.UUIDField()
    name = serializers.CharField()
    status = serializers.CharField()
    progress_percent = serializers.FloatField()
    failure_category = serializers.CharField()
    error_message = serializers.CharField(help_text="why it failed (the first 500 characters)")
    upstream = serializers.ListField(child=serializers.CharField(), help_text="the keys of the jobs it reads")
    retry_of = serializers.UUIDField(allow_null=True)
    url = serializers.CharField()


class PipelineEtaSerializer(serializers.Serializer):
    estimate = serializers.BooleanField(help_text="always true: learned from finished jobs, not promised")
    finish_at = serializers.DateTimeField()
    remaining_seconds = serializers.FloatField()
    unknown_jobs = serializers.IntegerField(help_text="jobs left whose run time nothing is known of (counted as 0)")
    basis = serializers.CharField()


class PipelineSerializer(JobGroupSerializer):
    """A pipeline summed up like any group of jobs (jobs.group_summary)."""


class PipelineDetailSerializer(PipelineSerializer):
    """A pipeline with its jobs, each after the jobs it reads, and its ETA (shaped by
    jobs.pipeline_states; this class says what the answer holds)."""

    jobs = PipelineJobSerializer(many=True, read_only=True)
    eta = PipelineEtaSerializer(allow_null=True, read_only=True, help_text="an estimate; null when nothing is known")

    class Meta(PipelineSerializer.Meta):
        fields = [*PipelineSerializer.Meta.fields, "jobs", "eta"]


class PipelineViewSet(viewsets.GenericViewSet):
    serializer_class = PipelineDetailSerializer
    pagination_class = NewestFirstPagination
    filterset_class = JobGroupFilter

    def get_queryset(self) -> QuerySet[JobGroup]:
        return visible_pipelines(self.request.user)

    @property
    def throttle_scope(self) -> str | None:
        return "submit" if getattr(self, "action", None) == "create" else None

    @extend_schema(
        request=PipelineCreateSerializer,
        responses={201: PipelineDetailSerializer},
        description="Makes every job of the pipeline, or none (one transaction). A job whose workflow reads "
        'another\'s output ("output:<key>/<n>", the n-th output counted from 0) waits `blocked` until that one '
        "completes, and fails `dependency_failed` if it does not. 400: a duplicate or unknown key, a job reading "
        "itself, a cycle (its keys named), more than PIPELINE_MAX_JOBS jobs, a bad output number.",
    )
    def create(self, request: Request) -> Response:
        incoming = PipelineCreateSerializer(data=request.data, context={"user": request.user})
        incoming.is_valid(raise_exception=True)
        data = incoming.validated_data
        group, _ = pipeline_create(user=request.user, nodes=data["nodes"], labels=labels_from(data))
        return Response(pipeline_state(group), status=status.HTTP_201_CREATED)

    @extend_schema(responses=PipelineSerializer(many=True))
    def list(self, request: Request) -> Response:
        """Your pipelines, newest first, summed up (each one's page lists its jobs and its ETA)."""
        found = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(found)
        return self.get_paginated_response(pipeline_states(list(found) if page is None else page))

    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        return Response(pipeline_state(self.get_object()))

    @extend_schema(
        request=None,
        responses={
            200: OpenApiResponse(PipelineDetailSerializer, description="every job of it has ended now"),
            202: OpenApiResponse(PipelineDetailSerializer, description="running jobs are being stopped"),
            403: OpenApiResponse(DetailSerializer, description="someone else's pipeline, without the permission"),
            409: OpenApiResponse(DetailSerializer, description="every job of it had ended already"),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Cancel every job of the pipeline still blocked, waiting or running (jobs.groups)."""
        return group_cancel_response(request, self.get_object(), pipeline_state, noun="pipeline")
