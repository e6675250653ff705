from django.db import models


class Backend(models.Model):
    """Operational state of a configured ComfyUI backend (its URL lives in settings, set by admins)."""

    name = models.CharField(max_length=64, unique=True)
    draining = models.BooleanField(default=False, help_text="finish what runs, take nothing new")
    draining_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} (draining)" if self.draining else self.name
