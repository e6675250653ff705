from django.db import models


class Backend(models.Model):
    """Operational state of a configured ComfyUI backend (its URL lives in settings, set by admins)."""

    name = models.CharField(max_length=64, unique=True)
    draining = models.BooleanField(default=False, help_text="finish what runs, take nothing new")
    draining_since = models.DateTimeField(null=True, blank=True)
    # What its latest health probe found (monitoring.health): None until probed.
    reachable = models.BooleanField(null=True, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    # From its /object_info (fleet.catalog), stored when it changes: what jobs it can run.
    node_classes = models.JSONField(default=list, blank=True)
    model_files = models.JSONField(default=list, blank=True)
    catalog_hash = models.CharField(max_length=64, blank=True)
    catalog_at = models.DateTimeField(null=True, blank=True, help_text="when its /object_info was last read")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} (draining)" if self.draining else self.name
