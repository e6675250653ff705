"""A group's progress and status, from its jobs' own (pure: the caller reads the jobs).

- A job retried by hand is counted through its retry: the retry joins the group, and the job it
  retried leaves the summary (it stays listed).
- Progress is the mean of the jobs' progress as ComfyUI reported it; a job that ended without
  completing (failed, cancelled) counts as done, since nothing more of it will run. 100% when every
  job has ended, never before.
- Status: `queued` while every job waits (in a queue, or blocked on another job); `running` while
  some job runs or waits after others started or ended; once all have ended, `completed` when every
  one completed, `failed` when any failed, `cancelled` otherwise.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from jobs.models import FINAL_STATUSES, JobStatus


@dataclass(frozen=True)
class MemberState:
    id: uuid.UUID
    status: str
    progress: float
    retry_of: uuid.UUID | None = None


@dataclass(frozen=True)
class GroupSummary:
    status: str
    progress: float
    counts: dict[str, int]
    total: int

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES


def counted_members(members: Sequence[MemberState]) -> list[MemberState]:
    """The jobs that stand for the group's work: each retried job replaced by its retry."""
    retried = {member.retry_of for member in members if member.retry_of is not None}
    return [member for member in members if member.id not in retried]


def group_summary(members: Sequence[MemberState]) -> GroupSummary:
    counted = counted_members(members)
    counts = Counter(member.status for member in counted)
    if not counted:
        return GroupSummary(status=JobStatus.COMPLETED, progress=1.0, counts={}, total=0)
    done = [1.0 if member.status in FINAL_STATUSES else min(max(member.progress, 0.0), 1.0) for member in counted]
    progress = sum(done) / len(done)
    status = _group_status(counts, len(counted))
    if status not in FINAL_STATUSES:
        progress = min(progress, 0.999)  # a group is 100% only when every job has ended
    return GroupSummary(status=status, progress=progress, counts=dict(counts), total=len(counted))


def _group_status(counts: Counter[str], total: int) -> str:
    ended = sum(counts[status] for status in FINAL_STATUSES)
    if ended == total:
        if counts[JobStatus.COMPLETED] == total:
            return JobStatus.COMPLETED
        return JobStatus.FAILED if counts[JobStatus.FAILED] else JobStatus.CANCELLED
    if counts[JobStatus.QUEUED] + counts[JobStatus.BLOCKED] == total:
        return JobStatus.QUEUED
    return JobStatus.RUNNING
