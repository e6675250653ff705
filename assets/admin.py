"""Input assets in the admin: who uploaded what, how big, used by how many jobs; thumbnails of images.

Thumbnails and downloads go through the admin's own content view, served inert like the API's
(assets.serving): an upload is untrusted content whatever its owner meant it to be.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from assets.media_types import RASTER_IMAGE_TYPES
from assets.models import Asset
from assets.selectors import with_use_counts
from assets.serving import stored_file_response


def asset_content_url(asset: Asset) -> str:
    return reverse("admin:assets_asset_content", args=[asset.pk])


def asset_thumbnail(asset: Asset, *, size: int = 64) -> SafeString | str:
    """A thumbnail for what its bytes showed to be a raster image (never an SVG or a page)."""
    if asset.media_type not in RASTER_IMAGE_TYPES:
        return "-"
    return format_html(
        '<img class="asset-thumb" src="{}" alt="{}" loading="lazy" style="max-width:{}px;max-height:{}px">',
        asset_content_url(asset),
        asset.name or str(asset.id)[:8],
        size,
        size,
    )


@admin.register(Asset)
class AssetAdmin(admin.ModelAdmin):
    list_display = [
        "thumbnail",
        "short_id",
        "name",
        "owner",
        "kind",
        "media_type",
        "size_bytes",
        "dimensions",
        "sha256_prefix",
        "created_at",
        "jobs_using",
    ]
    list_filter = ["kind", "media_type", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["=id", "owner__username", "name", "sha256"]
    list_select_related = ["owner"]
    show_full_result_count = False
    readonly_fields = [
        "id",
        "thumbnail_large",
        "name",
        "owner",
        "kind",
        "media_type",
        "size_bytes",
        "dimensions",
        "duration_seconds",
        "sha256",
        "created_at",
        "jobs_using",
    ]
    fields = list(readonly_fields)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Asset]:
        return with_use_counts(super().get_queryset(request))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # uploaded through the API, which judges the bytes and deduplicates

    def has_change_permission(self, request: HttpRequest, obj: Asset | None = None) -> bool:
        return False  # an asset's bytes and facts never change; delete it and upload another

    def has_delete_permission(self, request: HttpRequest, obj: Asset | None = None) -> bool:
        # Deleting goes through DELETE /api/assets/{id}/ (assets.services.asset_delete), which refuses
        # while a waiting or running job uses the asset; the admin's delete would not ask.
        return False

    @admin.display(description="")
    def thumbnail(self, asset: Asset) -> SafeString | str:
        return asset_thumbnail(asset)

    @admin.display(description="preview")
    def thumbnail_large(self, asset: Asset) -> SafeString | str:
        return asset_thumbnail(asset, size=320)

    @admin.display(description="id")
    def short_id(self, asset: Asset) -> str:
        return str(asset.id)[:8]

    @admin.display(description="size")
    def dimensions(self, asset: Asset) -> str:
        parts = []
        if asset.width and asset.height:
            parts.append(f"{asset.width}×{asset.height}")
        if asset.frames and asset.frames > 1:
            parts.append(f"{asset.frames} frames")
        if asset.duration_seconds:
            parts.append(f"{asset.duration_seconds:.1f} s")
        return ", ".join(parts) or "-"

    @admin.display(description="sha256")
    def sha256_prefix(self, asset: Asset) -> str:
        return asset.sha256[:12]

    @admin.display(description="used by jobs", ordering="jobs_using")
    def jobs_using(self, asset: Asset) -> int:
        return int(getattr(asset, "jobs_using", 0) or 0)

    def get_urls(self) -> list[Any]:
        content = path(
            "<uuid:object_id>/content/", self.admin_site.admin_view(self.content_view), name="assets_asset_content"
        )
        return [content, *super().get_urls()]

    def content_view(self, request: HttpRequest, object_id: uuid.UUID) -> HttpResponseBase:
        if not self.has_view_permission(request):
            raise PermissionDenied
        asset = get_object_or_404(Asset, pk=object_id)
        return stored_file_response(request, asset.file, name=asset.name, default_stem="asset", what="asset's file")
