"""Jobs that read other jobs' outputs: whether a reference may be submitted, which jobs a new job
waits for, and whether a blocked job may run now (reads only; jobs.services makes the moves).

A job whose workflow holds "output:<job id>/<n>" (assets.references.output_references) depends on
that job (a JobDependency row). It is created `blocked` while any of its upstream jobs has not
completed, released into the queue when all have, and failed `dependency_failed` when one of them
failed or was cancelled, or completed with fewer outputs than the reference needs.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, QuerySet

from assets.references import OutputReference, output_references
from jobs import selectors
from jobs.models import FINAL_STATUSES, Job, JobDependency, JobStatus

NOT_FINAL = [status for status in JobStatus.values if status not in FINAL_STATUSES]


def referenced_job_ids(workflow: Any) -> list[uuid.UUID]:
    """Each job whose outputs the workflow reads, once, in the order of its first reference."""
    references, _ = output_references(workflow)
    ids = [reference.job_id for reference in references]
    return list(dict.fromkeys(job_id for job_id in ids if job_id is not None))


def output_reference_problems(workflow: Any, user: Any, *, known_keys: Iterable[str] = ()) -> list[str]:
    """Why the workflow's output references cannot be submitted by `user`, each naming node and input.

    The upstream job must be one the user may see (their own, or any for staff who may view jobs):
    otherwise the answer is the same whether it exists or not. A completed one must have the n-th
    output; a failed or cancelled one will never have it. `known_keys` are the keys of the other jobs
    of a pipeline request, which are checked there (jobs.pipelines)."""
    references, problems = output_references(workflow)
    keys = set(known_keys)
    by_id: dict[uuid.UUID, list[OutputReference]] = {}
    for reference in references:
        if reference.source in keys:
            continue
        if reference.job_id is None:
            problems.append(f"{reference.label} = {reference.value!r}: {reference.source!r} is no job id")
            continue
        by_id.setdefault(reference.job_id, []).append(reference)
    if not by_id:
        return problems
    visible = selectors.visible_jobs(user).filter(pk__in=by_id).annotate(outputs_count=Count("outputs"))
    found = {job.pk: job for job in visible.select_related(None).only("id", "status")}
    for job_id, named in by_id.items():
        upstream = found.get(job_id)
        for reference in named:
            problem = _reference_problem(reference, upstream)
            if problem:
                problems.append(f"{reference.label} = {reference.value!r}: {problem}")
    return problems


def _reference_problem(reference: OutputReference, upstream: Job | None) -> str | None:
    if upstream is None:
        return "you have no such job"
    if upstream.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        return f"that job is {upstream.status} and will have no outputs (retry it, then name the retry)"
    count = getattr(upstream, "outputs_count", 0)
    if upstream.status == JobStatus.COMPLETED and reference.index >= count:
        return f"that job completed with {count} output(s), numbered from 0"
    return None


def upstream_jobs_locked(workflow: Any) -> list[Job]:
    """The jobs a new job's workflow reads from, locked until the new job's transaction commits: an
    upstream that ends meanwhile waits for the commit, and then sees the new job among its
    downstream ones (jobs.services.downstream_settle); one that ended before is read as ended."""
    ids = referenced_job_ids(workflow)
    if not ids:
        return []
    return list(Job.objects.select_for_update().filter(pk__in=ids).only("id", "status").order_by("pk"))


@dataclass(frozen=True)
class Verdict:
    """What becomes of a blocked job now: released, failed with `problem`, or (neither) it waits."""

    release: bool = False
    problem: str = ""
    upstream: dict[str, Any] | None = None

    @property
    def waits(self) -> bool:
        return not self.release and not self.problem


def release_verdict(job: Job) -> Verdict:
    """Whether a blocked job may run: every upstream completed with the outputs it reads."""
    upstreams = {
        upstream.pk: upstream
        for upstream in Job.objects.filter(downstream_links__job=job).only(
            "id", "status", "failure_category", "name", "pipeline_key"
        )
    }
    for upstream in upstreams.values():
        if upstream.status in (JobStatus.FAILED, JobStatus.CANCELLED):
            reason = f"failed ({upstream.failure_category})" if upstream.status == JobStatus.FAILED else "was cancelled"
            return Verdict(problem=f"upstream job {upstream_label(upstream)} {reason}", upstream=_named(upstream))
    if any(upstream.status != JobStatus.COMPLETED for upstream in upstreams.values()):
        return Verdict()
    counts = Counter(dict(Job.objects.filter(pk__in=upstreams).annotate(n=Count("outputs")).values_list("pk", "n")))
    references, _ = output_references(job.workflow)
    for reference in references:
        source = upstreams.get(reference.job_id) if reference.job_id else None
        if source is not None and reference.index >= counts[source.pk]:
            return Verdict(
                problem=(
                    f"upstream job {upstream_label(source)} completed with {counts[source.pk]} output(s); "
                    f"{reference.label} reads output {reference.index}"
                ),
                upstream=_named(source),
            )
    return Verdict(release=True)


def upstream_label(job: Job) -> str:
    name = job.pipeline_key or job.name
    return f"{name!r} ({job.pk})" if name else str(job.pk)


def _named(job: Job) -> dict[str, Any]:
    return {"id": str(job.pk), "key": job.pipeline_key, "status": job.status, "category": job.failure_category}


def blocked_downstream(job: Job) -> QuerySet[Job]:
    """The blocked jobs waiting for `job`, oldest first."""
    return Job.objects.filter(upstream_links__upstream=job, status=JobStatus.BLOCKED).order_by("created_at", "id")


def blocked_jobs_settled() -> QuerySet[Job]:
    """Blocked jobs none of whose upstream jobs is still to end: each must be released or failed now."""
    pending = JobDependency.objects.filter(upstream__status__in=NOT_FINAL).values("job_id")
    return Job.objects.filter(status=JobStatus.BLOCKED).exclude(pk__in=pending).order_by("created_at")


def upstream_of(job: Job) -> list[Job]:
    return list(Job.objects.filter(downstream_links__job=job).order_by("created_at", "id"))


def downstream_of(job: Job) -> list[Job]:
    return list(Job.objects.filter(upstream_links__upstream=job).order_by("created_at", "id"))
