"""Shot pipelines: jobs submitted together that read each other's outputs (a keyframe, the video made
from it, its upscale). One request, one group of kind `pipeline`, one transaction.

In the request each job has a key, and a workflow names another job's output by that key,
"output:<key>/<n>". The request is checked as a graph first (pipeline_problems: duplicate and unknown
keys, a job reading itself, cycles, outputs past JOB_MAX_OUTPUTS); then the jobs are made in an
order where every job comes after the jobs it reads (graphlib), each key's reference replaced by
the id of the job just made, so the stored workflows hold job ids only. Jobs that read unfinished
ones start `blocked` (jobs.services.job_create); the pipeline's status, progress and cancel are its
group's (jobs.group_summary, jobs.groups).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from typing import Any

from django.conf import settings
from django.db import transaction

from assets.references import output_references
from jobs import services
from jobs.groups import job_group_row
from jobs.labels import NO_LABELS, JobLabels
from jobs.models import GroupKind, JobGroup
from quotas.admission import batch_admitted


@dataclass(frozen=True)
class PipelineNode:
    """One job of a pipeline request, checked (jobs.pipeline_api), its references still by key."""

    key: str
    workflow: dict[str, Any]
    job_type: str
    priority: int = 5
    backend: str | None = None
    labels: JobLabels = NO_LABELS
    # The workflow template (and version) the workflow was filled from, when it was.
    template_name: str = ""
    template_version: int | None = None


def upstream_keys(node: PipelineNode, keys: set[str]) -> list[str]:
    """The keys of the request's jobs this one reads, each once."""
    references, _ = output_references(node.workflow)
    return list(dict.fromkeys(r.source for r in references if r.source in keys))


def pipeline_problems(nodes: Sequence[PipelineNode]) -> list[str]:
    """Why the request's jobs do not make a pipeline, as the graph sees it (each problem names keys)."""
    if len(nodes) > settings.PIPELINE_MAX_JOBS:
        return [f"at most {settings.PIPELINE_MAX_JOBS} jobs in a pipeline, not {len(nodes)}"]
    keys = [node.key for node in nodes]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        return [f"each job needs a key of its own; used more than once: {', '.join(duplicates)}"]
    known = set(keys)
    problems: list[str] = []
    for node in nodes:
        problems += _reference_problems(node, known)
    if problems:
        return problems
    try:
        pipeline_order(nodes)
    except CycleError as exc:
        cycle = list(dict.fromkeys(exc.args[1]))
        return [f"the jobs read each other's outputs in a cycle: {' -> '.join([*cycle, cycle[0]])}"]
    return []


def _reference_problems(node: PipelineNode, known: set[str]) -> list[str]:
    references, problems = output_references(node.workflow)
    problems = [f"job {node.key!r}: {problem}" for problem in problems]
    for reference in references:
        where = f"job {node.key!r}: {reference.label} = {reference.value!r}"
        if reference.source == node.key:
            problems.append(f"{where}: a job cannot read its own output")
        elif reference.source not in known and reference.job_id is None:
            problems.append(f"{where}: no job of this pipeline has the key {reference.source!r}")
        elif reference.index >= settings.JOB_MAX_OUTPUTS:
            problems.append(f"{where}: a job keeps at most {settings.JOB_MAX_OUTPUTS} outputs, numbered from 0")
    return problems


def pipeline_order(nodes: Sequence[PipelineNode]) -> list[PipelineNode]:
    """The jobs, each after every job it reads (CycleError when there is no such order)."""
    keys = {node.key for node in nodes}
    by_key = {node.key: node for node in nodes}
    graph = {node.key: upstream_keys(node, keys) for node in nodes}
    return [by_key[key] for key in TopologicalSorter(graph).static_order()]


def pipeline_create(
    *, user: Any, nodes: Sequence[PipelineNode], labels: JobLabels = NO_LABELS
) -> tuple[JobGroup, dict[str, uuid.UUID]]:
    """The pipeline and all its jobs, or nothing: one transaction. Returns the group and each key's
    job id. `nodes` must have passed pipeline_problems. The user's quotas are checked once for all
    of its jobs (quotas.admission)."""
    ids: dict[str, uuid.UUID] = {}
    with batch_admitted(user, len(nodes)), transaction.atomic(), services.queue_moves_held():
        group = job_group_row(user=user, labels=labels, kind=GroupKind.PIPELINE)
        for node in pipeline_order(nodes):
            job = services.job_create(
                user=user,
                workflow=resolved_workflow(node.workflow, ids),
                job_type=node.job_type,
                priority=node.priority,
                backend=node.backend,
                labels=node.labels.under(labels),
                group=group,
                template_name=node.template_name,
                template_version=node.template_version,
                pipeline_key=node.key,
            )
            ids[node.key] = job.pk
    return group, ids


def resolved_workflow(workflow: dict[str, Any], ids: dict[str, uuid.UUID]) -> dict[str, Any]:
    """The workflow with each "output:<key>/<n>" turned into "output:<job id>/<n>"."""
    references, _ = output_references(workflow)
    resolved = copy.deepcopy(workflow)
    for reference in references:
        if reference.source in ids:
            value = f"output:{ids[reference.source]}/{reference.index}"
            resolved[reference.node_id]["inputs"][reference.input_name] = value
    return resolved
