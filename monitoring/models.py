from django.db import models


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


class Backend(models.Model):
    """Operational state of a configured ComfyUI backend (its URL lives in settings, set by admins)."""

    name = models.CharField(max_length=64, unique=True)
    draining = models.BooleanField(
        default=False, help_text="finish what runs, take nothing new"
    )
    draining_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} (draining)" if self.draining else self.name
