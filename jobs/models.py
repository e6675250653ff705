"""The job, its outputs, and its one state machine.

Statuses, the allowed transitions and the final states are defined here and nowhere else;
`jobs.services.job_transition` is the only code that changes a job's status.
"""

import uuid

from django.conf import settings
from django.db import models

from jobs.labels import NAME_MAX_CHARS, PROJECT_MAX_CHARS, SHOT_MAX_CHARS, TAG_MAX_CHARS


class JobStatus(models.TextChoices):
    # A pipeline job whose upstream jobs have not all completed: in no queue yet (jobs.dependencies).
    BLOCKED = "blocked", "Waiting for upstream jobs"
    QUEUED = "queued", "Queued"
    SUBMITTED = "submitted", "Submitted to ComfyUI"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})

# The columns the tracker writes at a bounded rate while its job runs (jobs.services.progress_values).
PROGRESS_FIELDS = (
    "current_node_id",
    "current_node_class",
    "current_node_name",
    "current_node_category",
    "step_value",
    "step_max",
    "nodes_total",
    "nodes_done",
    "cached_nodes",
    "progress",
    "last_progress_at",
    "eta_finish_at",
    "preview_at",
)

ACTIVE_STATUSES = frozenset({JobStatus.SUBMITTED, JobStatus.RUNNING})
WAITING_STATUSES = frozenset({JobStatus.QUEUED})

ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    # Released into the queue when every upstream completed; failed (dependency_failed) when one did not.
    JobStatus.BLOCKED: frozenset({JobStatus.QUEUED, JobStatus.CANCELLED, JobStatus.FAILED}),
    JobStatus.QUEUED: frozenset({JobStatus.SUBMITTED, JobStatus.CANCELLED, JobStatus.FAILED}),
    # A prompt served entirely from ComfyUI's cache can finish before we see it run.
    # Back to queued: the attempt failed in a way worth retrying (a new attempt, a new prompt).
    JobStatus.SUBMITTED: frozenset(
        {JobStatus.RUNNING, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.QUEUED}
    ),
    JobStatus.RUNNING: frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.QUEUED}),
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


def column_width(model: type[models.Model], field_name: str) -> int:
    """The max_length of a text column: what ComfyUI sends is cut to it before it is stored."""
    field = model._meta.get_field(field_name)
    return int(getattr(field, "max_length", None) or 0)


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
    # The file store (S3, the disk) stayed down while the outputs were stored (STORAGE_RETRY_SECONDS).
    STORAGE_UNAVAILABLE = "storage_unavailable", "Storage unavailable"
    # The tracker itself broke on something unforeseen: the job ends instead of being retried forever.
    INTERNAL_ERROR = "internal_error", "Internal error"
    # An upstream job of a pipeline failed, was cancelled, or produced fewer outputs than referenced.
    DEPENDENCY_FAILED = "dependency_failed", "Dependency failed"


class GroupKind(models.TextChoices):
    BATCH = "batch", "Batch"
    PIPELINE = "pipeline", "Pipeline"


class JobGroup(models.Model):
    """Jobs submitted together (a template run as a batch: a seed sweep, a shot list), followed,
    summed up and cancelled as one. It has no status of its own: what its jobs are is its status
    (jobs.group_summary), so there is still one state machine. A pipeline is a group whose jobs
    reference each other's outputs (JobDependency)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="job_groups"
    )
    name = models.CharField(max_length=NAME_MAX_CHARS, blank=True)
    project = models.CharField(max_length=PROJECT_MAX_CHARS, blank=True)
    shot = models.CharField(max_length=SHOT_MAX_CHARS, blank=True)
    tags = models.JSONField(default=list, blank=True)
    kind = models.CharField(max_length=16, choices=GroupKind.choices, default=GroupKind.BATCH)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "-created_at"], name="jobgroup_user_created_idx"),
            models.Index(fields=["project", "shot", "-created_at"], name="jobgroup_project_idx"),
            models.Index(fields=["kind", "user", "-created_at"], name="jobgroup_kind_user_idx"),
        ]

    def __str__(self) -> str:
        return self.name or f"group {str(self.id)[:8]}"


class Job(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Every column here indexed alone by Django's default (foreign keys, db_index) was also the first of
    # a composite index below, and a job's row is written at each status change: its user, backend,
    # type and failure category are found through those (migration 0012), its retry through the
    # unique constraint; the fingerprint is learned by from node timings, never looked up here.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="jobs",
        db_index=False,  # job_user_created_idx
    )
    # The GPU it runs (or ran) on: empty while it waits, bound when a backend takes it (jobs.dispatch).
    backend = models.CharField(max_length=64, blank=True)
    # What it may run on: a backend the submitter named, labels the backend must carry, and the node
    # classes and model files its workflow needs (jobs.fit), judged against each backend when it takes work.
    requested_backend = models.CharField(max_length=64, blank=True)
    requires = models.JSONField(default=list, blank=True, help_text="backend labels the job needs")
    needs = models.JSONField(default=dict, blank=True, help_text="node classes and model files of its workflow")
    # Its turn among the waiting jobs of its priority (jobs.fair_share): the GPUs go round the users.
    fair_turn = models.BigIntegerField(default=0)
    job_type = models.CharField(max_length=32)
    priority = models.PositiveSmallIntegerField(default=5, help_text="0 (lowest) to 9 (most urgent)")
    workflow = models.JSONField(help_text="ComfyUI API-format graph")

    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    # One ComfyUI prompt per attempt; the first attempt's prompt_id is the job's own id.
    prompt_id = models.UUIDField(unique=True, null=True, blank=True, editable=False)
    attempt = models.PositiveSmallIntegerField(default=1)
    retry_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="retries",
        help_text="the job this one retries by hand",
        db_index=False,  # job_one_manual_retry
    )
    not_before = models.DateTimeField(null=True, blank=True, help_text="retry backoff: not submitted before")
    # Fingerprint of the graph's structure and cost inputs: what the ETA model learns by.
    fingerprint = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True, help_text="last time a task was sent for it")
    wait_flagged = models.BooleanField(default=False, help_text="has waited longer than the threshold")

    # Ownership: which tracker follows the job, when it last proved alive, how often it was delivered.
    client_id = models.CharField(max_length=64, blank=True)
    worker = models.CharField(max_length=255, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    deliveries = models.PositiveIntegerField(default=0)

    # Latest progress, as ComfyUI reported it; written at a bounded rate by the tracker.
    current_node_id = models.CharField(max_length=64, blank=True)
    current_node_class = models.CharField(max_length=128, blank=True)
    current_node_name = models.CharField(max_length=255, blank=True)
    current_node_category = models.CharField(max_length=128, blank=True)
    step_value = models.FloatField(null=True, blank=True)
    step_max = models.FloatField(null=True, blank=True)
    nodes_total = models.PositiveIntegerField(default=0)
    nodes_done = models.PositiveIntegerField(default=0)
    cached_nodes = models.JSONField(default=list, blank=True)
    progress = models.FloatField(default=0.0, help_text="0..1, from ComfyUI's node and step reports")
    # `seq` numbers the timeline (JobEvent.seq); `version` numbers the live states sent to browsers.
    seq = models.PositiveBigIntegerField(default=0, help_text="sequence number of the latest timeline event")
    version = models.PositiveBigIntegerField(default=0, help_text="version of the latest broadcast state")
    last_progress_at = models.DateTimeField(null=True, blank=True, help_text="last time ComfyUI reported progress")
    # An estimate, labelled as one: learned from the node timings of finished jobs.
    eta_finish_at = models.DateTimeField(null=True, blank=True, help_text="estimated finish (an estimate)")
    preview_at = models.DateTimeField(null=True, blank=True, help_text="when the latest live preview was kept")

    failure_category = models.CharField(max_length=32, choices=FailureCategory.choices, blank=True)
    error_message = models.TextField(blank=True)
    error_details = models.JSONField(default=dict, blank=True)

    # What people call it (jobs.labels), given at submission and never changed; `tags` is what the job
    # shows, its JobTag rows are what the tag filter reads.
    name = models.CharField(max_length=NAME_MAX_CHARS, blank=True, db_index=True)
    project = models.CharField(max_length=PROJECT_MAX_CHARS, blank=True)
    shot = models.CharField(max_length=SHOT_MAX_CHARS, blank=True)
    tags = models.JSONField(default=list, blank=True)
    group = models.ForeignKey(JobGroup, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    # The job's key in its pipeline's request ("keyframe", "video"): what `output:<key>/<n>` named.
    pipeline_key = models.CharField(max_length=64, blank=True)
    # The workflow template (and its version) the job was filled from; the filled workflow is the
    # job's own, so publishing a new version never changes a job already submitted.
    template_name = models.CharField(max_length=64, blank=True)
    template_version = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "backend", "-priority", "created_at"], name="job_queue_idx"),
            # The fleet's waiting order (jobs.dispatch): priority, fair share, age.
            models.Index(fields=["status", "-priority", "fair_turn", "created_at"], name="job_dispatch_idx"),
            # A waiting job's owner's (or project's) last turn at its priority (jobs.fair_share).
            models.Index(
                fields=["user", "priority", "fair_turn"],
                condition=models.Q(status="queued"),
                name="job_waiting_user_turn_idx",
            ),
            models.Index(
                fields=["project", "priority", "fair_turn"],
                condition=models.Q(status="queued"),
                name="job_waiting_project_turn_idx",
            ),
            models.Index(fields=["-created_at"], name="job_created_idx"),
            models.Index(fields=["user", "-created_at"], name="job_user_created_idx"),
            # The admin's filtered job lists: each filter walks its own index newest first and
            # stops at a page, instead of sorting every matching row of a million (docs/HAZARDS.md).
            models.Index(fields=["status", "-created_at"], name="job_status_created_idx"),
            models.Index(fields=["failure_category", "-created_at"], name="job_failure_created_idx"),
            models.Index(fields=["job_type", "-created_at"], name="job_type_created_idx"),
            models.Index(fields=["backend", "-created_at"], name="job_backend_created_idx"),
            # Roll-up refreshes read only the jobs finished since the last one; "finished on" filters.
            models.Index(fields=["finished_at"], name="job_finished_idx"),
            # The project, shot and template filters (REST and admin), newest first like the others.
            models.Index(fields=["project", "shot", "-created_at"], name="job_project_created_idx"),
            models.Index(fields=["shot", "-created_at"], name="job_shot_created_idx"),
            models.Index(fields=["template_name", "template_version", "-created_at"], name="job_template_created_idx"),
        ]
        constraints = [
            # A job is retried by hand once: a second (or concurrent) retry gets the same new job.
            models.UniqueConstraint(fields=["retry_of"], name="job_one_manual_retry"),
        ]

    def __str__(self) -> str:
        return f"{self.job_type} job {self.id} ({self.status})"

    def save(self, *args, **kwargs) -> None:
        if self.prompt_id is None:
            # The job's own id is its first prompt_id: a redelivered task can find its prompt.
            self.prompt_id = self.id
        super().save(*args, **kwargs)

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
    def estimate_backend(self) -> str:
        """Whose learned timings estimate its run: where it runs, else where it asked to, else the default."""
        return self.backend or self.requested_backend or settings.COMFYUI_DEFAULT_BACKEND

    @property
    def waiting_for(self) -> str:
        """What a waiting job waits for, e.g. "a free backend with label video"; empty once bound."""
        if self.status not in (JobStatus.QUEUED, JobStatus.BLOCKED) or self.backend:
            return ""
        wants = [f"backend {self.requested_backend}"] if self.requested_backend else []
        wants += [f"label {label}" for label in self.requires or ()]
        return "a free backend" + (" with " + ", ".join(wants) if wants else "")

    @property
    def progress_message(self) -> str:
        """A short human line, e.g. "KSampler: step 15/20" or "VAE Decode"."""
        if self.status != JobStatus.RUNNING or not self.current_node_name:
            return self.get_status_display()
        if self.step_max and self.step_value is not None and self.step_max > 1:
            return f"{self.current_node_name}: step {self.step_value:g}/{self.step_max:g}"
        return self.current_node_name


def output_upload_path(output: "JobOutput", filename: str) -> str:
    # Names are generated by the project, never taken from ComfyUI or a browser (docs/HAZARDS.md).
    suffix = "".join(c for c in filename.rsplit(".", 1)[-1].lower() if c.isalnum())[:8] or "bin"
    return f"outputs/{output.job_id}/{uuid.uuid4().hex}.{suffix}"


def thumbnail_upload_path(output: "JobOutput", filename: str) -> str:
    # jobs.thumbnails makes every thumbnail a WebP: the name is the project's, as for outputs.
    return f"thumbnails/{output.job_id}/{uuid.uuid4().hex}.webp"


class JobTag(models.Model):
    """One tag of one job, for the tag filter: portable where a JSON containment lookup is not
    (SQLite has none) and served by its own index."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="tag_rows")
    tag = models.CharField(max_length=TAG_MAX_CHARS)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tag", "job"], name="jobtag_unique_tag_job")]

    def __str__(self) -> str:
        return self.tag


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
    # A small stored copy of a raster-image output (jobs.thumbnails); empty when none could be made.
    thumbnail = models.FileField(upload_to=thumbnail_upload_path, max_length=255, blank=True)
    thumbnail_width = models.PositiveSmallIntegerField(default=0)
    thumbnail_height = models.PositiveSmallIntegerField(default=0)

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


class JobDependency(models.Model):
    """`job` reads an output of `upstream` (an `output:<id>/<n>` reference in its workflow), so it
    stays blocked until `upstream` completes. Indexed both ways: a job's upstreams decide its release,
    an upstream's downstreams are what its final transition propagates to."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="upstream_links")
    upstream = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="downstream_links")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "upstream"], name="jobdependency_unique_edge")]

    def __str__(self) -> str:
        return f"{self.job_id} after {self.upstream_id}"


class JobAttempt(models.Model):
    """One ComfyUI prompt of a job: when, where, and how it ended."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveSmallIntegerField()
    # Usually new per attempt; an attempt that re-attaches after ComfyUI was unreachable keeps it.
    prompt_id = models.UUIDField(db_index=True)
    backend = models.CharField(max_length=64)
    worker = models.CharField(max_length=255, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, blank=True, help_text="completed, failed, cancelled; blank while active")
    failure_category = models.CharField(max_length=32, choices=FailureCategory.choices, blank=True)
    error_message = models.TextField(blank=True)

    class Meta:
        ordering = ["job", "number"]
        constraints = [models.UniqueConstraint(fields=["job", "number"], name="jobattempt_unique_number")]

    def __str__(self) -> str:
        return f"attempt {self.number} of job {self.job_id}: {self.outcome or 'active'}"


class EventKind(models.TextChoices):
    STATUS = "status", "Status changed"
    NODE_STARTED = "node_started", "Node started"
    NODE_FINISHED = "node_finished", "Node finished"
    NODES_CACHED = "nodes_cached", "Nodes served from cache"
    STEPS = "steps", "Step progress (sampled)"
    OUTPUT = "output", "Output stored"
    ERROR = "error", "Error"
    ATTEMPT = "attempt", "Attempt"
    NOTE = "note", "Note"


class JobEvent(models.Model):
    """The job's timeline. `seq` is the job's sequence number, shared with live broadcasts, so a
    client that reconnects with the last seq it saw can ask for exactly what it missed."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveBigIntegerField()
    kind = models.CharField(max_length=16, choices=EventKind.choices)
    at = models.DateTimeField()
    node_id = models.CharField(max_length=64, blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["job", "seq"]
        constraints = [models.UniqueConstraint(fields=["job", "seq"], name="jobevent_unique_seq")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.kind} {self.node_id}".strip()


class NodeTiming(models.Model):
    """How long one node of one job took: what the ETA model and the statistics learn from."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="node_timings")
    attempt = models.PositiveSmallIntegerField(default=1)
    node_id = models.CharField(max_length=64)
    class_type = models.CharField(max_length=128)
    backend = models.CharField(max_length=64)
    fingerprint = models.CharField(max_length=64, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    duration = models.FloatField(help_text="seconds")
    steps = models.PositiveIntegerField(null=True, blank=True, help_text="step max, for sampler-like nodes")

    class Meta:
        indexes = [
            models.Index(fields=["class_type", "backend", "fingerprint"], name="nodetiming_model_idx"),
            models.Index(fields=["finished_at"], name="nodetiming_finished_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.class_type} #{self.node_id}: {self.duration:.2f}s"
