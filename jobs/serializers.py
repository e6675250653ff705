from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.urls import reverse
from rest_framework import serializers

from assets.selectors import asset_reference_problems
from jobs.models import Job, JobAttempt, JobEvent, JobOutput, JobStatus
from jobs.queue_eta import QueuePlace
from jobs.workflow_validation import workflow_problems


class WorkflowField(serializers.JSONField):
    """A ComfyUI API-format workflow, checked before anything else looks at it: DRF's own check
    would answer NaN or infinity with a bare "Value must be valid JSON." instead of naming the node."""

    def to_internal_value(self, data: Any) -> Any:
        problems = workflow_problems(data)
        if problems:
            raise serializers.ValidationError(problems)
        return super().to_internal_value(data)


class JobCreateSerializer(serializers.Serializer):
    workflow = WorkflowField()
    job_type = serializers.CharField(max_length=32)
    priority = serializers.IntegerField(min_value=0, max_value=9, default=5)
    backend = serializers.CharField(max_length=64, required=False, allow_blank=True)

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

    class Meta:
        model = JobOutput
        fields = ["id", "node_id", "kind", "comfy_filename", "media_type", "size_bytes", "download_url"]

    def get_download_url(self, output: JobOutput) -> str:
        return reverse("job-output-download", kwargs={"pk": output.job_id, "output_id": output.pk})


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
    run_seconds = serializers.FloatField(read_only=True)
    wait_seconds = serializers.FloatField(read_only=True)
    cancel_requested = serializers.SerializerMethodField()
    user = serializers.CharField(source="user.username", default=None, read_only=True)
    queue_position = serializers.SerializerMethodField()
    eta = serializers.SerializerMethodField()
    preview_url = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = [
            "id",
            "prompt_id",
            "attempt",
            "retry_of",
            "user",
            "status",
            "job_type",
            "backend",
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

    def get_step(self, job: Job) -> dict[str, float] | None:
        if job.step_max is None or job.step_value is None:
            return None
        return {"value": job.step_value, "max": job.step_max}

    def get_error(self, job: Job) -> dict[str, Any] | None:
        if job.status != JobStatus.FAILED:
            return None
        return {"category": job.failure_category, "message": job.error_message, "details": job.error_details}

    def get_outputs(self, job: Job) -> list[dict[str, Any]]:
        if job.status != JobStatus.COMPLETED:
            return []
        return list(JobOutputSerializer(job.outputs.all(), many=True).data)

    def get_websocket_url(self, job: Job) -> str:
        return f"/ws/jobs/{job.id}/"

    def get_cancel_requested(self, job: Job) -> bool:
        return job.cancel_requested_at is not None
