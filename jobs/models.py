"""The job, its outputs, and its one state machine.

Statuses, the allowed transitions and the final states are defined here and nowhere else;
`jobs.services.job_transition` is the only code that changes a job's status.
"""

import uuid

from django.conf import settings
from django.db import models


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    SUBMITTED = "submitted", "Submitted to ComfyUI"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
ACTIVE_STATUSES = frozenset({JobStatus.SUBMITTED, JobStatus.RUNNING})
WAITING_STATUSES = frozenset({JobStatus.QUEUED})

ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    JobStatus.QUEUED: frozenset({JobStatus.SUBMITTED, JobStatus.CANCELLED, JobStatus.FAILED}),
    # A prompt served entirely from ComfyUI's cache can finish before we see it run.
    JobStatus.SUBMITTED: frozenset(
        {JobStatus.RUNNING, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.RUNNING: frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}

# The timestamp field stamped when a job enters a status.
TRANSITION_TIMESTAMPS: dict[str, str] = {
    JobStatus.SUBMITTED: "submitted_at",
    JobStatus.RUNNING: "started_at",
    JobStatus.COMPLETED: "finished_at",
    JobStatus.FAILED: "finished_at",
    JobStatus.CANCELLED: "finished_at",
}


def transition_allowed(current: str, new: str) -> bool:
    return new in ALLOWED_TRANSITIONS.get(current, frozenset())


class FailureCategory(models.TextChoices):
    VALIDATION = "validation", "Validation"
    MISSING_MODEL = "missing_model", "Missing model"
    MISSING_NODE = "missing_node", "Missing node"
    OUT_OF_MEMORY = "out_of_memory", "Out of memory"
    NODE_ERROR = "node_error", "Node error"
    INTERRUPTED = "interrupted", "Interrupted"
    COMFYUI_UNREACHABLE = "comfyui_unreachable", "ComfyUI unreachable"
    LOST = "lost", "Lost"
    STUCK = "stuck", "Stuck"
    TIMED_OUT = "timed_out", "Timed out"
    WORKER_LOST = "worker_lost", "Worker lost"
    OUTPUT_MISSING = "output_missing", "Output missing"


class Job(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    backend = models.CharField(max_length=64, db_index=True)
    job_type = models.CharField(max_length=32, db_index=True)
    priority = models.PositiveSmallIntegerField(default=5, help_text="0 (lowest) to 9 (most urgent)")
    workflow = models.JSONField(help_text="ComfyUI API-format graph")

    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    created_at = models.DateTimeField(auto_now_add=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)

    # Ownership: which tracker follows the job, when it last proved alive, how often it was delivered.
    client_id = models.CharField(max_length=64, blank=True)
    worker = models.CharField(max_length=255, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    deliveries = models.PositiveIntegerField(default=0)

    # Latest progress, as ComfyUI reported it; written at a bounded rate by the tracker.
    current_node_id = models.CharField(max_length=64, blank=True)
    current_node_class = models.CharField(max_length=128, blank=True)
    current_node_name = models.CharField(max_length=255, blank=True)
    step_value = models.FloatField(null=True, blank=True)
    step_max = models.FloatField(null=True, blank=True)
    nodes_total = models.PositiveIntegerField(default=0)
    nodes_done = models.PositiveIntegerField(default=0)
    cached_nodes = models.JSONField(default=list, blank=True)
    progress = models.FloatField(default=0.0, help_text="0..1, from ComfyUI's node and step reports")
    seq = models.PositiveBigIntegerField(default=0, help_text="sequence number of the latest state")

    failure_category = models.CharField(
        max_length=32, choices=FailureCategory.choices, blank=True, db_index=True
    )
    error_message = models.TextField(blank=True)
    error_details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "backend", "-priority", "created_at"], name="job_queue_idx"),
            models.Index(fields=["-created_at"], name="job_created_idx"),
            models.Index(fields=["user", "-created_at"], name="job_user_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.job_type} job {self.id} ({self.status})"

    @property
    def prompt_id(self) -> str:
        # The job's own id is its ComfyUI prompt_id: a redelivered task can find its prompt.
        return str(self.id)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def run_seconds(self) -> float | None:
        if not self.started_at:
            return None
        end = self.finished_at
        if end is None:
            from django.utils import timezone

            end = timezone.now()
        return (end - self.started_at).total_seconds()

    @property
    def wait_seconds(self) -> float | None:
        start = self.submitted_at or self.started_at
        if start is None:
            return None
        return (start - self.created_at).total_seconds()

    @property
    def progress_message(self) -> str:
        """A short human line, e.g. "KSampler: step 15/20" or "VAE Decode"."""
        if self.status != JobStatus.RUNNING or not self.current_node_name:
            return self.get_status_display()
        if self.step_max and self.step_value is not None and self.step_max > 1:
            return f"{self.current_node_name}: step {self.step_value:g}/{self.step_max:g}"
        return self.current_node_name


def output_upload_path(output: "JobOutput", filename: str) -> str:
    # Names are generated by the project, never taken from ComfyUI or a browser (HAZARDS.md).
    suffix = "".join(c for c in filename.rsplit(".", 1)[-1].lower() if c.isalnum())[:8] or "bin"
    return f"outputs/{output.job_id}/{uuid.uuid4().hex}.{suffix}"


class JobOutput(models.Model):
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="outputs")
    node_id = models.CharField(max_length=64)
    kind = models.CharField(max_length=32, help_text="ComfyUI output key: images, gifs, videos, ...")
    comfy_filename = models.CharField(max_length=255)
    comfy_subfolder = models.CharField(max_length=255, blank=True)
    comfy_type = models.CharField(max_length=32, default="output")
    file = models.FileField(upload_to=output_upload_path, max_length=255)
    media_type = models.CharField(max_length=100)
    size_bytes = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["job", "node_id", "comfy_subfolder", "comfy_filename", "comfy_type"],
                name="joboutput_unique_per_job",
            )
        ]

    def __str__(self) -> str:
        return f"{self.comfy_filename} ({self.media_type})"
