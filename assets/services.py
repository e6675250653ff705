"""Everything that changes assets: create (deduplicated per owner), delete, and the uses jobs make of them."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import Any, BinaryIO, cast

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from assets.intake import AssetRefused, asset_inspect
from assets.models import Asset, AssetUse, column_width
from assets.references import AssetReference

logger = logging.getLogger(__name__)


class AssetInUse(Exception):
    """A waiting or running job uses the asset."""

    def __init__(self, job_ids: list[uuid.UUID]) -> None:
        super().__init__(f"in use by {len(job_ids)} waiting or running job(s)")
        self.job_ids = job_ids


def asset_create(*, owner: Any, upload: UploadedFile, name: str = "") -> tuple[Asset, bool]:
    """The owner's asset with the upload's bytes: a new one (True), or the one they already had
    with the same bytes (False). AssetRefused when the upload cannot be an asset (intake's reasons,
    or the owner's quota)."""
    inspected = asset_inspect(cast(BinaryIO, upload), upload.size or 0)
    existing = Asset.objects.filter(owner=owner, sha256=inspected.sha256).first()
    if existing is not None:
        return existing, False
    _check_quota(owner, inspected.size)
    facts = inspected.facts
    asset = Asset(
        owner=owner,
        name=display_name(name or upload.name or ""),
        kind=inspected.kind,
        media_type=inspected.media.media_type,
        size_bytes=inspected.size,
        sha256=inspected.sha256,
        width=facts.width,
        height=facts.height,
        frames=facts.frames,
        duration_seconds=facts.seconds,
    )
    upload.seek(0)
    # Only the extension of what the bytes are reaches the storage name (models.asset_upload_path).
    asset.file.save(f"asset.{inspected.media.extension}", upload, save=False)
    try:
        with transaction.atomic():
            asset.save()
    except IntegrityError:
        # The same bytes from the same owner, stored by a concurrent request first.
        asset.file.delete(save=False)
        return Asset.objects.get(owner=owner, sha256=inspected.sha256), False
    logger.info(
        "asset %s: %s %s, %d bytes, of user %s", asset.id, asset.kind, asset.media_type, asset.size_bytes, owner
    )
    return asset, True


def _check_quota(owner: Any, size: int) -> None:
    mine = Asset.objects.filter(owner=owner)
    count = mine.count()
    if count >= settings.ASSET_MAX_PER_USER:
        raise AssetRefused(f"you have {count} assets; the limit is {settings.ASSET_MAX_PER_USER}: delete some first")
    used = mine.aggregate(total=Sum("size_bytes"))["total"] or 0
    if used + size > settings.ASSET_MAX_BYTES_PER_USER:
        raise AssetRefused(
            f"your assets take {used} bytes; this one would make {used + size}, past your limit of "
            f"{settings.ASSET_MAX_BYTES_PER_USER}: delete some first"
        )


def display_name(text: str) -> str:
    """The owner's label, as shown: printable characters only, cut to its column."""
    cleaned = "".join(c for c in text if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF).strip()
    return cleaned[: column_width(Asset, "name")]


def asset_delete(asset: Asset) -> None:
    """Delete the asset and its file; AssetInUse while a waiting or running job uses it.

    The asset's row is locked first: a job being created at the same moment records its use under
    the same lock (asset_uses_record), so either the delete sees the use or the job finds no asset
    (and fails at its GPU saying so) - never a job running with a file deleted under it."""
    with transaction.atomic():
        locked = Asset.objects.select_for_update().filter(pk=asset.pk).first()
        if locked is None:
            return
        busy = list(
            AssetUse.objects.filter(asset=locked, released_at__isnull=True).values_list("job_id", flat=True).distinct()
        )
        if busy:
            raise AssetInUse(busy)
        name, storage = locked.file.name or "", locked.file.storage
        locked.delete()
        transaction.on_commit(lambda: _file_discard(storage, name))


def _file_discard(storage: Any, name: str) -> None:
    try:
        storage.delete(name)
    except Exception:
        logger.exception("could not remove the deleted asset's file %s", name)


# --- uses by jobs ------------------------------------------------------------------------------------


def asset_uses_record(*, job_id: uuid.UUID, owner: Any, references: Iterable[AssetReference]) -> int:
    """Record which of the owner's assets a new job uses (call in the job's creating transaction);
    references to assets that are not the owner's (or no longer exist) are not recorded. Returns
    how many uses were recorded."""
    references = list(references)
    if not references or owner is None or not getattr(owner, "is_authenticated", False):
        return 0
    ids = {reference.asset_id for reference in references}
    # Locked against a concurrent delete (asset_delete).
    assets = {a.pk: a for a in Asset.objects.select_for_update().filter(pk__in=ids, owner=owner)}
    uses = [
        AssetUse(
            asset=assets[reference.asset_id],
            job_id=job_id,
            node_id=reference.node_id[: column_width(AssetUse, "node_id")],
            input_name=reference.input_name[: column_width(AssetUse, "input_name")],
        )
        for reference in references
        if reference.asset_id in assets
    ]
    AssetUse.objects.bulk_create(uses, ignore_conflicts=True)
    return len(uses)


def asset_uses_release(job_id: uuid.UUID) -> int:
    """The job has ended: its assets may be deleted again. Returns how many uses were released."""
    return AssetUse.objects.filter(job_id=job_id, released_at__isnull=True).update(released_at=timezone.now())
