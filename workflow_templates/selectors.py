"""Reads: who may publish, the templates a user may see and run, a version by number, and whether a
run's asset inputs are the runner's own assets of the right kind."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from django.db.models import QuerySet

from assets.selectors import owned_asset_kinds
from workflow_templates.inputs import ASSET_KINDS, Problems, TemplateInput
from workflow_templates.models import TemplateVersion, WorkflowTemplate

# The admin's model permission: whoever may add templates there may publish them through the API.
PUBLISH_TEMPLATES = "workflow_templates.add_workflowtemplate"


def _staff(user: Any) -> bool:
    return bool(user.is_authenticated and user.is_active and user.is_staff)


def may_publish(user: Any) -> bool:
    """Staff holding the permission to add workflow templates, as the admin decides."""
    return _staff(user) and user.has_perm(PUBLISH_TEMPLATES)


def visible_templates(user: Any) -> QuerySet[WorkflowTemplate]:
    """Every published template for anyone signed in; those marked staff-only for staff alone."""
    templates = WorkflowTemplate.objects.filter(latest_version__gt=0)
    if not user.is_authenticated:
        return templates.none()
    return templates if _staff(user) else templates.filter(staff_only=False)


def template_version(template: WorkflowTemplate, number: int | None = None) -> TemplateVersion | None:
    """Version `number` of the template; its latest when no number is given."""
    wanted = template.latest_version if number is None else number
    return TemplateVersion.objects.filter(template=template, number=wanted).select_related("template").first()


def template_versions(template: WorkflowTemplate) -> QuerySet[TemplateVersion]:
    return TemplateVersion.objects.filter(template=template).order_by("-number")


def asset_input_problems(specs: list[TemplateInput], runs: Iterable[dict[str, Any]], owner: Any) -> list[Problems]:
    """For each run's checked values, the asset inputs that name no asset of the owner's, or an asset
    of another kind (keyed by input name): all runs' assets read in one query."""
    runs = list(runs)
    asset_specs = [spec for spec in specs if spec.is_asset]
    wanted = {run[spec.name] for run in runs for spec in asset_specs if isinstance(run.get(spec.name), uuid.UUID)}
    kinds = owned_asset_kinds(owner, wanted) if wanted else {}
    found: list[Problems] = []
    for run in runs:
        problems: Problems = {}
        for spec in asset_specs:
            asset_id = run.get(spec.name)
            if not isinstance(asset_id, uuid.UUID):
                continue
            kind = kinds.get(asset_id)
            if kind is None:
                problems[spec.name] = [f"you have no asset {asset_id}"]
            elif kind != ASSET_KINDS[spec.kind]:
                problems[spec.name] = [
                    f"asset {asset_id} is {_article(kind)} {kind}; this input takes {_article(spec.kind)} {spec.kind} "
                    f"({ASSET_KINDS[spec.kind]} asset)"
                ]
        found.append(problems)
    return found


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"
