"""Writes to groups of jobs: create a group with its jobs in one transaction, cancel what still runs.

Every job of a group is made by `jobs.services.job_create` and cancelled by `jobs.services.job_cancel`,
like any other job; the group only gathers them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from jobs import services
from jobs.labels import NO_LABELS, JobLabels
from jobs.models import FINAL_STATUSES, GroupKind, JobGroup
from quotas.admission import batch_admitted


@dataclass(frozen=True)
class GroupMember:
    """One job to make in a group: its filled workflow and what it is called (over the group's labels)."""

    workflow: dict[str, Any]
    labels: JobLabels = NO_LABELS


def job_group_create(
    *,
    user: Any,
    members: Sequence[GroupMember],
    job_type: str,
    priority: int = 5,
    backend: str | None = None,
    labels: JobLabels = NO_LABELS,
    template_name: str = "",
    template_version: int | None = None,
) -> JobGroup:
    """The group and all its jobs, or nothing: one transaction. Each job carries the group's labels
    under its own (jobs.labels.JobLabels.under); the waiting jobs hear of the queue once. The user's
    quotas are checked once for all of them (quotas.admission: a batch of N counts N)."""
    with batch_admitted(user, len(members)), transaction.atomic(), services.queue_moves_held():
        group = job_group_row(user=user, labels=labels)
        for member in members:
            services.job_create(
                user=user,
                workflow=member.workflow,
                job_type=job_type,
                priority=priority,
                backend=backend,
                labels=member.labels.under(labels),
                group=group,
                template_name=template_name,
                template_version=template_version,
            )
    return group


def job_group_row(*, user: Any, labels: JobLabels, kind: str = GroupKind.BATCH) -> JobGroup:
    """The group's own row, named by its labels (the caller makes its jobs in the same transaction)."""
    return JobGroup.objects.create(
        user=user if getattr(user, "is_authenticated", False) else None,
        kind=kind,
        name=labels.name,
        project=labels.project,
        shot=labels.shot,
        tags=list(labels.tags),
    )


def job_group_cancel(group: JobGroup) -> int:
    """Cancel every job of the group still waiting or running (jobs.services.job_cancel: a waiting
    one at once, a running one by its tracker); returns how many were asked to stop. Newest first:
    a pipeline's jobs are made after the jobs they read, so a blocked job ends cancelled, not failed
    `dependency_failed` by the cancel of its upstream one."""
    asked = 0
    with transaction.atomic(), services.queue_moves_held():
        for job in group.jobs.exclude(status__in=FINAL_STATUSES).order_by("-created_at", "-id"):
            services.job_cancel(job)
            asked += 1
    return asked
