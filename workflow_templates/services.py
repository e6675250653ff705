"""Writes: publish a template version; run a version as one job or as a group of jobs.

Jobs are made by jobs.services.job_create (one job) and jobs.groups.job_group_create (a batch), the
one way any job comes to be; a template only fills the workflow and names the job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from jobs.groups import GroupMember, job_group_create
from jobs.labels import NO_LABELS, JobLabels
from jobs.models import Job, JobGroup
from jobs.services import job_create
from workflow_templates.inputs import TemplateInput, filled_workflow, stored_inputs
from workflow_templates.models import TemplateVersion, WorkflowTemplate


def template_publish(
    *,
    user: Any,
    name: str,
    job_type: str,
    workflow: dict[str, Any],
    inputs: list[TemplateInput],
    notes: str = "",
    description: str | None = None,
    staff_only: bool | None = None,
) -> TemplateVersion:
    """Version 1 of a new template, or the next version of an existing one (earlier versions stay
    as they were). `description` and `staff_only` change the template when given."""
    with transaction.atomic():
        template, _ = WorkflowTemplate.objects.get_or_create(name=name, defaults={"created_by": user})
        # The row lock orders concurrent publishes of one name: each gets its own number.
        template = WorkflowTemplate.objects.select_for_update().get(pk=template.pk)
        version = TemplateVersion.objects.create(
            template=template,
            number=template.latest_version + 1,
            job_type=job_type,
            workflow=workflow,
            inputs=[spec.to_json() for spec in inputs],
            notes=notes,
            published_by=user,
        )
        changes: dict[str, Any] = {"latest_version": version.number, "updated_at": timezone.now()}
        if description is not None:
            changes["description"] = description
        if staff_only is not None:
            changes["staff_only"] = staff_only
        WorkflowTemplate.objects.filter(pk=template.pk).update(**changes)
    template.refresh_from_db()
    version.template = template
    return version


@dataclass(frozen=True)
class TemplateRun:
    """One job's checked input values (workflow_templates.inputs.run_values) and its own labels."""

    values: dict[str, Any]
    labels: JobLabels = NO_LABELS


def template_job_create(
    *, user: Any, version: TemplateVersion, run: TemplateRun, priority: int = 5, backend: str | None = None
) -> Job:
    """One job filled from the version; named after the template unless the run names it."""
    labels = run.labels.under(JobLabels(name=version.template.name))
    return job_create(
        user=user,
        workflow=_filled(version, run),
        job_type=version.job_type,
        priority=priority,
        backend=backend,
        labels=labels,
        template_name=version.template.name,
        template_version=version.number,
    )


def template_group_create(
    *,
    user: Any,
    version: TemplateVersion,
    runs: Sequence[TemplateRun],
    labels: JobLabels,
    priority: int = 5,
    backend: str | None = None,
) -> JobGroup:
    """A batch: one group, one job per run (named "<group> #n" unless the run names it), all or none."""
    group_labels = JobLabels(
        name=labels.name or version.template.name, project=labels.project, shot=labels.shot, tags=labels.tags
    )
    members = [
        GroupMember(
            workflow=_filled(version, run),
            labels=run.labels.under(JobLabels(name=f"{group_labels.name} #{place}")),
        )
        for place, run in enumerate(runs, start=1)
    ]
    return job_group_create(
        user=user,
        members=members,
        job_type=version.job_type,
        priority=priority,
        backend=backend,
        labels=group_labels,
        template_name=version.template.name,
        template_version=version.number,
    )


def _filled(version: TemplateVersion, run: TemplateRun) -> dict[str, Any]:
    return filled_workflow(version.workflow, stored_inputs(version.inputs), run.values)
