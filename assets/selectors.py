"""Reads: the assets a user may see, whether a workflow's references are the submitter's and fit
their loaders, and the assets a job uses."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from django.db.models import Count, QuerySet

from assets.models import Asset
from assets.references import AssetReference, asset_references

# The admin's model permissions, applied to REST as for jobs: staff who may view assets see all.
VIEW_ASSETS = "assets.view_asset"
DELETE_ASSETS = "assets.delete_asset"


def _staff(user: Any) -> bool:
    return bool(user.is_authenticated and user.is_active and user.is_staff)


def may_see_others_assets(user: Any) -> bool:
    return _staff(user) and (user.has_perm(VIEW_ASSETS) or user.has_perm(DELETE_ASSETS))


def may_delete_asset(user: Any, asset: Asset) -> bool:
    return asset.owner_id == user.pk or (_staff(user) and user.has_perm(DELETE_ASSETS))


def visible_assets(user: Any) -> QuerySet[Asset]:
    """A user's own assets; every asset for staff who may see them."""
    assets = Asset.objects.select_related("owner")
    if not user.is_authenticated:
        return assets.none()
    return assets if may_see_others_assets(user) else assets.filter(owner=user)


def with_use_counts(assets: QuerySet[Asset]) -> QuerySet[Asset]:
    return assets.annotate(jobs_using=Count("uses__job_id", distinct=True))


def asset_reference_problems(workflow: Any, owner: Any) -> list[str]:
    """Why the workflow's asset references cannot be run for `owner`, each naming node and input:
    not a reference, no such asset of theirs, or a kind of media the loader does not read."""
    references, problems = asset_references(workflow)
    if not references:
        return problems
    owned = owned_asset_kinds(owner, {reference.asset_id for reference in references})
    for reference in references:
        kind = owned.get(reference.asset_id)
        accepted = reference.accepted_kinds
        if kind is None:
            problems.append(f"{reference.label} = 'asset:{reference.asset_id}': you have no such asset")
        elif accepted is not None and kind not in accepted:
            problems.append(
                f"{reference.label} = 'asset:{reference.asset_id}' is {_article(kind)} {kind} asset; "
                f"{reference.class_type} reads {' or '.join(sorted(accepted))} there"
            )
    return problems


def owned_asset_kinds(owner: Any, asset_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The kind of each asset among `asset_ids` that `owner` owns; the others are absent."""
    if not getattr(owner, "is_authenticated", False):
        return {}
    return dict(Asset.objects.filter(owner=owner, pk__in=set(asset_ids)).values_list("pk", "kind"))


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def workflow_input_assets(workflow: Any) -> list[tuple[AssetReference, Asset | None]]:
    """Each asset reference of a workflow with its asset (None once deleted): a job's inputs, as
    its page in the admin shows them."""
    references, _ = asset_references(workflow)
    assets = Asset.objects.in_bulk({reference.asset_id for reference in references})
    return [(reference, assets.get(reference.asset_id)) for reference in references]


def assets_for_job(owner_id: int | None, asset_ids: list[uuid.UUID]) -> dict[uuid.UUID, Asset]:
    """The job owner's assets among `asset_ids` (what its GPU worker uploads to ComfyUI)."""
    if owner_id is None or not asset_ids:
        return {}
    return {asset.pk: asset for asset in Asset.objects.filter(owner_id=owner_id, pk__in=asset_ids)}
