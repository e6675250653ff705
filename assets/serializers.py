from __future__ import annotations

from django.urls import reverse
from rest_framework import serializers

from access.parsers import SingleValuedFields
from assets.models import Asset
from assets.references import ASSET_PREFIX


class AssetUploadSerializer(SingleValuedFields):
    # An empty file is refused by the intake, with the others' reasons.
    file = serializers.FileField(allow_empty_file=True)
    name = serializers.CharField(max_length=255, required=False, allow_blank=True)


class AssetSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    reference = serializers.SerializerMethodField(help_text='what a workflow puts in a loader input: "asset:<id>"')
    content_url = serializers.SerializerMethodField()

    class Meta:
        model = Asset
        fields = [
            "id",
            "name",
            "owner",
            "kind",
            "media_type",
            "size_bytes",
            "sha256",
            "width",
            "height",
            "frames",
            "duration_seconds",
            "created_at",
            "reference",
            "content_url",
        ]

    def get_reference(self, asset: Asset) -> str:
        return f"{ASSET_PREFIX}{asset.id}"

    def get_content_url(self, asset: Asset) -> str:
        return reverse("asset-content", kwargs={"pk": asset.pk})
