"""Which backends meet a rule right now: reads of jobs and of monitoring's health samples.

Each reader returns the backends for which the rule holds, each with a one-line message and its
figures. Reads are bounded by the rule's window and served by indexes (finished jobs by
`finished_at`, waiting jobs by status, health samples by backend and time).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Min, Q

from alerts.models import AlertKind
from alerts.rules import Rule
from jobs.models import Job, JobStatus
from monitoring.models import BackendHealthSample


@dataclass(frozen=True)
class Condition:
    message: str
    details: dict[str, Any] = field(default_factory=dict)


def rule_backends(rule: Rule) -> list[str]:
    return [rule.backend] if rule.backend else list(settings.COMFYUI_BACKENDS)


def failure_rate(rule: Rule, now: datetime) -> dict[str, Condition]:
    """Backends that failed at least `percent` % of the jobs they finished in the last `minutes`,
    out of at least `min_jobs` (completed and failed; a cancel is nobody's failure)."""
    rows = (
        Job.objects.filter(
            finished_at__gte=now - timedelta(minutes=rule.minutes),
            status__in=[JobStatus.COMPLETED, JobStatus.FAILED],
            backend__in=rule_backends(rule),
        )
        .values("backend")
        .annotate(total=Count("pk"), failed=Count("pk", filter=Q(status=JobStatus.FAILED)))
        .order_by()
    )
    firing = {}
    for row in rows:
        total, failed = row["total"], row["failed"]
        if total >= max(rule.min_jobs, 1) and failed * 100 >= rule.percent * total:
            rate = round(failed * 100 / total, 1)
            firing[row["backend"]] = Condition(
                f"{row['backend']}: {failed} of {total} jobs failed ({rate:g}%) in the last {rule.minutes:g} minutes",
                {"failed": failed, "finished": total, "percent": rate, "minutes": rule.minutes},
            )
    return firing


def backend_unreachable(rule: Rule, now: datetime) -> dict[str, Condition]:
    """Backends whose health probes have all failed for at least `minutes` (monitoring.health)."""
    firing = {}
    for backend in rule_backends(rule):
        down_since, error = _down_since(backend)
        if down_since is not None and down_since <= now - timedelta(minutes=rule.minutes):
            minutes = round((now - down_since).total_seconds() / 60, 1)
            firing[backend] = Condition(
                f"{backend}: unreachable for {minutes:g} minutes ({error[:200]})",
                {"down_since": down_since.isoformat(), "last_error": error[:500]},
            )
    return firing


def _down_since(backend: str) -> tuple[datetime | None, str]:
    """When the backend's current run of failed probes began (None: its latest probe succeeded)."""
    samples = BackendHealthSample.objects.filter(backend=backend)
    latest = samples.order_by("-checked_at").only("reachable", "error").first()
    if latest is None or latest.reachable:
        return None, ""
    last_up = samples.filter(reachable=True).order_by("-checked_at").values_list("checked_at", flat=True).first()
    failed = samples.filter(reachable=False)
    if last_up is not None:
        failed = failed.filter(checked_at__gt=last_up)
    return failed.order_by("checked_at").values_list("checked_at", flat=True).first(), latest.error


def job_waiting(rule: Rule, now: datetime) -> dict[str, Condition]:
    """Jobs waiting in the queue for longer than `minutes`, one alert however many wait: per backend a
    job asked for, and for the jobs that any backend may take (routing binds a job only when a
    backend takes it: jobs.dispatch), under FLEET, the fleet's queue (rules of every backend)."""
    requested = rule_backends(rule) if rule.backend else [*rule_backends(rule), ""]
    rows = (
        Job.objects.filter(
            status=JobStatus.QUEUED,
            created_at__lt=now - timedelta(minutes=rule.minutes),
            requested_backend__in=requested,
        )
        .values("requested_backend")
        .annotate(waiting=Count("pk"), oldest=Min("created_at"))
        .order_by()
    )
    firing = {}
    for row in rows:
        where = row["requested_backend"] or FLEET
        minutes = round((now - row["oldest"]).total_seconds() / 60, 1)
        firing[where] = Condition(
            f"{where}: {row['waiting']} jobs waiting longer than {rule.minutes:g} minutes (the oldest for {minutes:g})",
            {"waiting": row["waiting"], "oldest_created_at": row["oldest"].isoformat(), "minutes": rule.minutes},
        )
    return firing


# Where jobs wait that any backend may take.
FLEET = "fleet"


READERS: dict[str, Callable[[Rule, datetime], dict[str, Condition]]] = {
    AlertKind.FAILURE_RATE: failure_rate,
    AlertKind.BACKEND_UNREACHABLE: backend_unreachable,
    AlertKind.JOB_WAITING: job_waiting,
}
