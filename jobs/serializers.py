from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from access.parsers import SingleValuedFields
from assets.selectors import asset_reference_problems
from jobs.group_summary import GroupSummary
from jobs.labels import NAME_MAX_CHARS, PROJECT_MAX_CHARS, SHOT_MAX_CHARS, TAG_MAX_CHARS, JobLabels, label_problem
from jobs.models import Job, JobAttempt, JobEvent, JobGroup, JobOutput, JobStatus
from jobs.queue_eta import QueuePlace
from jobs.workflow_validation import workflow_problems
from webhooks.serializers import JobWebhookSerializer


@extend_schema_field(
    {
        "type": "object",
        "description": "ComfyUI's API format (Workflow > Export (API)): node id -> node",
        "minProperties": 1,
        "additionalProperties": {
            "type": "object",
            "required": ["class_type", "inputs"],
            "properties": {
                "class_type": {"type": "string"},
                "inputs": {"type": "object", "description": "values, or links [node id, output index]"},
                "_meta": {"type": "object"},
            },
        },
        "example": {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 512, "height": 512, "batch_size": 1, "color": 0}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "demo"}},
        },
    }
)
class WorkflowField(serializers.JSONField):
    """A ComfyUI API-format workflow, checked before anything else looks at it: DRF's own check
    would answer NaN or infinity with a bare "Value must be valid JSON." instead of naming the node."""

    def to_internal_value(self, data: Any) -> Any:
        problems = workflow_problems(data)
        if problems:
            raise serializers.ValidationError(problems)
        return super().to_internal_value(data)


def _no_control_characters(value: str) -> None:
    problem = label_problem(value)
    if problem:
        raise serializers.ValidationError(problem)


class LabelField(serializers.CharField):
    """A name, project, shot or tag: trimmed, bounded by its column, no control characters."""

    def __init__(self, *, max_length: int, **kwargs: Any) -> None:
        kwargs.setdefault("validators", []).append(_no_control_characters)
        super().__init__(max_length=max_length, **kwargs)


class JobLabelsSerializer(serializers.Serializer):
    """What people call the work (jobs.labels): `name`, `project`, `shot`, free `tags`."""

    name = LabelField(max_length=NAME_MAX_CHARS, required=False, allow_blank=True, default="")
    project = LabelField(max_length=PROJECT_MAX_CHARS, required=False, allow_blank=True, default="")
    shot = LabelField(max_length=SHOT_MAX_CHARS, required=False, allow_blank=True, default="")
    tags = serializers.ListField(
        child=LabelField(max_length=TAG_MAX_CHARS), required=False, default=list, help_text="free tags, each once"
    )

    def validate_tags(self, value: list[str]) -> list[str]:
        unique = list(dict.fromkeys(value))
        if len(unique) > settings.JOB_MAX_TAGS:
            raise serializers.ValidationError(f"at most {settings.JOB_MAX_TAGS} tags, not {len(unique)}")
        return unique


def labels_from(data: Mapping[str, Any]) -> JobLabels:
    """The labels among a JobLabelsSerializer's validated data."""
    return JobLabels(
        name=data.get("name", ""),
        project=data.get("project", ""),
        shot=data.get("shot", ""),
        tags=tuple(data.get("tags", ())),
    )


class JobCreateSerializer(SingleValuedFields, JobLabelsSerializer):
    workflow = WorkflowField()
    job_type = serializers.CharField(max_length=32)
    priority = serializers.IntegerField(min_value=0, max_value=9, default=5)
    backend = serializers.CharField(
        max_length=64, required=False, allow_blank=True, help_text="run only on this backend (empty: any that fits)"
    )
    requires = serializers.ListField(
        child=serializers.RegexField(r"^[A-Za-z0-9:._-]{1,64}$"),
        max_length=16,
        required=False,
        default=list,
        help_text='backend labels the job needs, e.g. ["video", "vram:48g"] (COMFYUI_BACKEND_LABELS)',
    )
    webhook = JobWebhookSerializer(required=False, help_text="this job's own callback (README, Webhooks)")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Asset references ("asset:<id>") name the submitter's own assets, of a kind their loader
        reads (the view passes the submitter as the context's "user")."""
        problems = asset_reference_problems(attrs["workflow"], self.context.get("user"))
        if problems:
            raise serializers.ValidationError({"workflow": problems})
        return attrs

    def validate_job_type(self, value: str) -> str:
        if value not in settings.JOB_TYPES:
            raise serializers.ValidationError(f"unknown job type {value!r}; expected one of {settings.JOB_TYPES}")
        return value

    def validate_backend(self, value: str) -> str | None:
        if not value:
            return None
        if value not in settings.COMFYUI_BACKENDS:
            raise serializers.ValidationError(
                f"unknown backend {value!r}; configured: {sorted(settings.COMFYUI_BACKENDS)}"
            )
        return value


# Timeline sequence numbers are PositiveBigIntegerField values.
MAX_SEQ = 2**63 - 1


class TimelineQuerySerializer(serializers.Serializer):
    """`?after=<seq>` on REST and websockets: the timeline after a sequence number. A number that
    `int()` would refuse (`²`) or that no sequence number reaches (5,000 digits) is a 400."""

    after = serializers.IntegerField(min_value=0, max_value=MAX_SEQ, required=False)


def query_problem(errors: Mapping[str, Any]) -> str:
    """A serializer's errors on query parameters as one line, e.g. "after: A valid integer is required."."""
    return "; ".join(f"{name}: {' '.join(map(str, messages))}" for name, messages in errors.items())


class JobOutputSerializer(serializers.ModelSerializer):
    download_url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField(
        help_text="a small WebP of a raster-image output; null when it has none (video, audio, undecodable)"
    )

    class Meta:
        model = JobOutput
        fields = [
            "id",
            "node_id",
            "kind",
            "comfy_filename",
            "media_type",
            "size_bytes",
            "download_url",
            "thumbnail_url",
        ]

    def get_download_url(self, output: JobOutput) -> str:
        return reverse("job-output-download", kwargs={"pk": output.job_id, "output_id": output.pk})

    def get_thumbnail_url(self, output: JobOutput) -> str | None:
        if not output.thumbnail:
            return None
        return reverse("job-output-thumbnail", kwargs={"pk": output.job_id, "output_id": output.pk})


class JobEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobEvent
        fields = ["seq", "kind", "at", "node_id", "data"]


class JobAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobAttempt
        fields = [
            "number",
            "prompt_id",
            "backend",
            "worker",
            "submitted_at",
            "started_at",
            "finished_at",
            "outcome",
            "failure_category",
            "error_message",
        ]


class JobTimelineSerializer(serializers.Serializer):
    """A job's timeline after `?after=<seq>`, oldest first, at most 1000 events at a time."""

    job = serializers.UUIDField()
    seq = serializers.IntegerField(help_text="the job's latest sequence number")
    events = JobEventSerializer(many=True)
    more = serializers.BooleanField(help_text="more events follow: ask again with `?after=<the last seq>`")


class CurrentNodeSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="as ComfyUI reports it (`4.0.0.3` inside a subgraph)")
    class_type = serializers.CharField()
    name = serializers.CharField(help_text="display name, from the backend's /object_info")
    category = serializers.CharField()


class StepSerializer(serializers.Serializer):
    value = serializers.FloatField()
    max = serializers.FloatField()


class EtaSerializer(serializers.Serializer):
    estimate = serializers.BooleanField(help_text="always true: learned from finished jobs, not promised")
    finish_at = serializers.DateTimeField()
    basis = serializers.CharField()


class JobErrorSerializer(serializers.Serializer):
    category = serializers.CharField()
    message = serializers.CharField()
    details = serializers.JSONField(help_text="what ComfyUI said besides (its node_errors), bounded")


class JobSerializer(serializers.ModelSerializer):
    """The one shape of a job, for REST and for every websocket message.

    Shapes what is already loaded: the context's `queue_places` (jobs.selectors.queue_places) gives
    the waiting jobs' places and estimates.
    """

    progress_percent = serializers.SerializerMethodField()
    # A string, not the related job's UUID: states go through json.dumps (websockets) and msgpack
    # (the Redis channel layer), which know no UUID.
    retry_of = serializers.UUIDField(source="retry_of_id", read_only=True, allow_null=True)
    message = serializers.CharField(source="progress_message", read_only=True)
    current_node = serializers.SerializerMethodField()
    step = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField()
    outputs = serializers.SerializerMethodField()
    websocket_url = serializers.SerializerMethodField()
    run_seconds = serializers.FloatField(read_only=True, allow_null=True)
    wait_seconds = serializers.FloatField(read_only=True, allow_null=True)
    cancel_requested = serializers.SerializerMethodField()
    user = serializers.CharField(source="user.username", default=None, read_only=True, allow_null=True)
    queue_position = serializers.SerializerMethodField()
    eta = serializers.SerializerMethodField()
    preview_url = serializers.SerializerMethodField()
    group = serializers.UUIDField(source="group_id", read_only=True, allow_null=True)
    template = serializers.SerializerMethodField()
    waiting_for = serializers.CharField(
        read_only=True, help_text='what a waiting job waits for ("a free backend with label video"); empty once bound'
    )

    class Meta:
        model = Job
        fields = [
            "id",
            "prompt_id",
            "attempt",
            "retry_of",
            "user",
            "name",
            "project",
            "shot",
            "tags",
            "group",
            "template",
            "status",
            "job_type",
            "backend",
            "requested_backend",
            "requires",
            "waiting_for",
            "priority",
            "created_at",
            "submitted_at",
            "started_at",
            "finished_at",
            "wait_seconds",
            "run_seconds",
            "progress",
            "progress_percent",
            "message",
            "current_node",
            "step",
            "nodes_total",
            "nodes_done",
            "cached_nodes",
            "queue_position",
            "eta",
            "preview_url",
            "seq",
            "version",
            "cancel_requested",
            "failure_category",
            "error",
            "outputs",
            "websocket_url",
        ]

    def get_progress_percent(self, job: Job) -> float:
        return round(job.progress * 100, 1)

    def get_template(self, job: Job) -> dict[str, Any] | None:
        """The workflow template and version the job was filled from."""
        if not job.template_name:
            return None
        return {"name": job.template_name, "version": job.template_version}

    @extend_schema_field(CurrentNodeSerializer(allow_null=True))
    def get_current_node(self, job: Job) -> dict[str, str] | None:
        if not job.current_node_id:
            return None
        return {
            "id": job.current_node_id,
            "class_type": job.current_node_class,
            "name": job.current_node_name,
            "category": job.current_node_category,
        }

    def get_queue_position(self, job: Job) -> int | None:
        place = self._queue_place(job)
        return place.position if place else None

    @extend_schema_field(EtaSerializer(allow_null=True))
    def get_eta(self, job: Job) -> dict[str, Any] | None:
        """An estimate, and labelled as one: learned from the node timings of finished jobs."""
        if job.status == JobStatus.RUNNING and job.eta_finish_at:
            return {"estimate": True, "finish_at": job.eta_finish_at.isoformat(), "basis": "node timings"}
        place = self._queue_place(job)
        if place is not None and place.finish_at is not None:
            return {"estimate": True, "finish_at": place.finish_at.isoformat(), "basis": "node timings, jobs ahead"}
        return None

    def _queue_place(self, job: Job) -> QueuePlace | None:
        if job.status != JobStatus.QUEUED:
            return None
        # Read beforehand for every job shown together (jobs.selectors.queue_places), not once per job
        # here: a missing context is a caller's bug, so it fails loudly.
        places: Mapping[uuid.UUID, QueuePlace] = self.context["queue_places"]
        return places.get(job.pk)

    def get_preview_url(self, job: Job) -> str | None:
        if job.status != JobStatus.RUNNING or job.preview_at is None:
            return None
        url = reverse("job-preview", kwargs={"pk": job.pk})
        return f"{url}?v={int(job.preview_at.timestamp() * 1000)}"

    @extend_schema_field(StepSerializer(allow_null=True))
    def get_step(self, job: Job) -> dict[str, float] | None:
        if job.step_max is None or job.step_value is None:
            return None
        return {"value": job.step_value, "max": job.step_max}

    @extend_schema_field(JobErrorSerializer(allow_null=True))
    def get_error(self, job: Job) -> dict[str, Any] | None:
        if job.status != JobStatus.FAILED:
            return None
        return {"category": job.failure_category, "message": job.error_message, "details": job.error_details}

    @extend_schema_field(JobOutputSerializer(many=True))
    def get_outputs(self, job: Job) -> list[dict[str, Any]]:
        if job.status != JobStatus.COMPLETED:
            return []
        return list(JobOutputSerializer(job.outputs.all(), many=True).data)

    def get_websocket_url(self, job: Job) -> str:
        return f"/ws/jobs/{job.id}/"

    def get_cancel_requested(self, job: Job) -> bool:
        return job.cancel_requested_at is not None


class JobGroupSerializer(serializers.ModelSerializer):
    """A group of jobs summed up: status, progress and counts per status (jobs.group_summary).
    `kind`: `batch` (a template's batch), or `pipeline` (jobs reading each other's outputs).

    Shapes what is already read: the context's `summaries` (jobs.selectors.group_states) gives each
    group's summary, `members` (detail only) its jobs' rows.
    """

    user = serializers.CharField(source="user.username", default=None, read_only=True, allow_null=True)
    # Text, not an enum: "kind" names other choice sets in the schema (assets, template inputs).
    kind = serializers.CharField(read_only=True, help_text="batch or pipeline")
    template = serializers.SerializerMethodField()
    status = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()
    progress_percent = serializers.SerializerMethodField()
    jobs_total = serializers.SerializerMethodField()
    counts = serializers.SerializerMethodField(help_text="jobs per status (a retried job counts through its retry)")
    url = serializers.SerializerMethodField()

    class Meta:
        model = JobGroup
        fields = [
            "id",
            "user",
            "name",
            "project",
            "shot",
            "tags",
            "kind",
            "template",
            "created_at",
            "status",
            "progress",
            "progress_percent",
            "jobs_total",
            "counts",
            "url",
        ]

    def _summary(self, group: JobGroup) -> GroupSummary:
        summaries: Mapping[uuid.UUID, GroupSummary] = self.context["summaries"]
        return summaries[group.pk]

    def get_template(self, group: JobGroup) -> dict[str, Any] | None:
        templates: Mapping[uuid.UUID, dict[str, Any]] = self.context.get("templates", {})
        return templates.get(group.pk)

    def get_status(self, group: JobGroup) -> str:
        return self._summary(group).status

    def get_progress(self, group: JobGroup) -> float:
        return round(self._summary(group).progress, 4)

    def get_progress_percent(self, group: JobGroup) -> float:
        return round(self._summary(group).progress * 100, 1)

    def get_jobs_total(self, group: JobGroup) -> int:
        return self._summary(group).total

    def get_counts(self, group: JobGroup) -> dict[str, int]:
        return self._summary(group).counts

    def get_url(self, group: JobGroup) -> str:
        return reverse("job-group-detail", kwargs={"pk": group.pk})


class GroupMemberSerializer(serializers.ModelSerializer):
    """One job of a group, in brief: its full state is at `url`."""

    progress_percent = serializers.SerializerMethodField()
    retry_of = serializers.UUIDField(source="retry_of_id", read_only=True, allow_null=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = ["id", "name", "shot", "tags", "status", "progress_percent", "failure_category", "retry_of", "url"]

    def get_progress_percent(self, job: Job) -> float:
        return round(job.progress * 100, 1)

    def get_url(self, job: Job) -> str:
        return reverse("job-detail", kwargs={"pk": job.pk})


class JobGroupDetailSerializer(JobGroupSerializer):
    jobs = serializers.SerializerMethodField()

    class Meta(JobGroupSerializer.Meta):
        fields = [*JobGroupSerializer.Meta.fields, "jobs"]

    @extend_schema_field(GroupMemberSerializer(many=True))
    def get_jobs(self, group: JobGroup) -> list[dict[str, Any]]:
        members: Mapping[uuid.UUID, list[Job]] = self.context["members"]
        return list(GroupMemberSerializer(members.get(group.pk, []), many=True).data)
