from django.db import models

from jobs.models import JobGroup


class BackendHealthSample(models.Model):
    """One probe of one ComfyUI backend: reachable, queue length, VRAM."""

    backend = models.CharField(max_length=64)
    checked_at = models.DateTimeField(auto_now_add=True)
    reachable = models.BooleanField()
    queue_running = models.PositiveIntegerField(default=0)
    queue_pending = models.PositiveIntegerField(default=0)
    vram_total = models.PositiveBigIntegerField(null=True, blank=True)
    vram_free = models.PositiveBigIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-checked_at"]
        indexes = [models.Index(fields=["backend", "-checked_at"], name="health_backend_time_idx")]

    def __str__(self) -> str:
        state = "up" if self.reachable else "down"
        return f"{self.backend} {state} at {self.checked_at:%Y-%m-%d %H:%M:%S}"


class RollupPeriod(models.TextChoices):
    HOUR = "hour", "Hour"
    DAY = "day", "Day"


class JobRollup(models.Model):
    """Finished jobs per hour and per day (by `finished_at`) × job type × backend × status × category.

    The statistics and failure pages read these few thousand rows instead of a million jobs.
    Durations are kept as sums and, in day rows, as fixed-bucket histograms
    (`monitoring.rollups.DURATION_EDGES`, without their empty long end), so a p50 or p95 over a
    window of days is a sum of histograms done by the database, not a scan. Hour rows (the 48-hour
    throughput chart) have counts, sums and maxima only.
    """

    period = models.CharField(max_length=4, choices=RollupPeriod.choices)
    start = models.DateTimeField()
    job_type = models.CharField(max_length=32)
    backend = models.CharField(max_length=64)
    status = models.CharField(max_length=16)
    failure_category = models.CharField(max_length=32, blank=True)
    count = models.PositiveIntegerField(default=0)
    wait_count = models.PositiveIntegerField(default=0, help_text="jobs that left the queue")
    wait_sum = models.FloatField(default=0.0, help_text="seconds")
    wait_hist = models.JSONField(default=list, blank=True)
    run_count = models.PositiveIntegerField(default=0, help_text="jobs that ran")
    run_sum = models.FloatField(default=0.0, help_text="seconds")
    run_hist = models.JSONField(default=list, blank=True)
    # The longest durations seen: a percentile read from a histogram bucket never exceeds them.
    wait_max = models.FloatField(null=True, blank=True, help_text="seconds")
    run_max = models.FloatField(null=True, blank=True, help_text="seconds")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["period", "start", "job_type", "backend", "status", "failure_category"],
                name="jobrollup_unique_cell",
            )
        ]

    def __str__(self) -> str:
        return f"{self.period} {self.start:%Y-%m-%d %H:%M} {self.job_type}/{self.backend} {self.status}: {self.count}"


class NodeRollup(models.Model):
    """Node timings per day × node class × backend: the slowest-node statistics (older databases may
    still hold hour rows, which nothing reads)."""

    period = models.CharField(max_length=4, choices=RollupPeriod.choices)
    start = models.DateTimeField()
    class_type = models.CharField(max_length=128)
    backend = models.CharField(max_length=64)
    count = models.PositiveIntegerField(default=0)
    duration_sum = models.FloatField(default=0.0, help_text="seconds")
    duration_max = models.FloatField(default=0.0, help_text="seconds")
    duration_hist = models.JSONField(default=list, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["period", "start", "class_type", "backend"], name="noderollup_unique_cell")
        ]

    def __str__(self) -> str:
        return f"{self.period} {self.start:%Y-%m-%d %H:%M} {self.class_type}@{self.backend}: {self.count}"


class ErrorMessageRollup(models.Model):
    """Failed jobs per day × category × backend × job type × error message (its first 500 characters)."""

    day = models.DateTimeField()
    failure_category = models.CharField(max_length=32)
    backend = models.CharField(max_length=64)
    job_type = models.CharField(max_length=32)
    message = models.CharField(max_length=500)
    count = models.PositiveIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["day"], name="errorrollup_day_idx")]

    def __str__(self) -> str:
        return f"{self.day:%Y-%m-%d} {self.failure_category}: {self.count} × {self.message[:60]}"


class RollupState(models.Model):
    """How far the roll-ups are known to be current: the beat task refreshes from here on."""

    name = models.CharField(max_length=32, unique=True)
    refreshed_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name}: {self.refreshed_until}"


class Pipeline(JobGroup):
    """A shot pipeline, as the admin lists it: a group of jobs of kind `pipeline` (jobs.pipelines).
    A proxy: the rows are the groups' own."""

    class Meta:
        proxy = True
        verbose_name = "pipeline"
