"""Input assets: files a user uploads once and names in workflows as "asset:<id>".

An asset belongs to its owner. Its bytes live in the configured storage under a name the project
generates (never the client's filename); what it is comes from its bytes (assets.media_types),
its size in pixels, frames and seconds from its headers (assets.media_facts).

Which jobs use an asset is recorded here, by job id and not by a foreign key to jobs: jobs sit
above assets in the layers (README, "Architecture"), so assets never imports them. A use is
released when its job ends (jobs.services.job_transition); an asset with an unreleased use
cannot be deleted.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class AssetKind(models.TextChoices):
    IMAGE = "image", "Image"
    VIDEO = "video", "Video"
    AUDIO = "audio", "Audio"


def column_width(model: type[models.Model], field_name: str) -> int:
    """The max_length of a text column: what users and ComfyUI send is cut to it before it is stored."""
    return int(getattr(model._meta.get_field(field_name), "max_length", None) or 0)


def asset_upload_path(asset: Asset, filename: str) -> str:
    # Generated, never the client's name: `filename` only ever carries the sniffed extension.
    suffix = "".join(c for c in filename.rsplit(".", 1)[-1].lower() if c.isalnum())[:8] or "bin"
    return f"assets/{asset.id}.{suffix}"


class Asset(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assets")
    name = models.CharField(max_length=255, blank=True, help_text="the owner's label; never used as a file name")
    kind = models.CharField(max_length=8, choices=AssetKind.choices)
    media_type = models.CharField(max_length=100, help_text="what its bytes are")
    file = models.FileField(upload_to=asset_upload_path, max_length=255)
    size_bytes = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    frames = models.PositiveIntegerField(null=True, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # Each user's list, newest first, keyset-paginated; and filtered by kind.
            models.Index(fields=["owner", "-created_at"], name="asset_owner_created_idx"),
            models.Index(fields=["owner", "kind", "-created_at"], name="asset_owner_kind_created_idx"),
        ]
        constraints = [
            # The same bytes uploaded twice by one user are one asset.
            models.UniqueConstraint(fields=["owner", "sha256"], name="asset_unique_bytes_per_owner"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} asset {self.id} ({self.name or self.media_type})"

    @property
    def extension(self) -> str:
        name = self.file.name or ""
        return name.rsplit(".", 1)[-1] if "." in name else "bin"


class AssetUse(models.Model):
    """One input of one job that names the asset. `job_id` is a job's id, not a foreign key."""

    asset = models.ForeignKey(Asset, on_delete=models.CASCADE, related_name="uses")
    job_id = models.UUIDField(db_index=True)
    node_id = models.CharField(max_length=64)
    input_name = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True)
    released_at = models.DateTimeField(null=True, blank=True, help_text="when its job ended")

    class Meta:
        ordering = ["job_id", "node_id", "input_name"]
        constraints = [
            models.UniqueConstraint(fields=["job_id", "node_id", "input_name"], name="assetuse_unique_input"),
        ]
        indexes = [
            # "Is it in use?" before a delete: the asset's unreleased uses.
            models.Index(fields=["asset", "released_at"], name="assetuse_asset_released_idx"),
        ]

    def __str__(self) -> str:
        return f"asset {self.asset_id} in job {self.job_id}, node {self.node_id} input {self.input_name}"
