"""The alert rules in force: the ones settings define (ALERT_*; 0 turns one off) and the active ones
an administrator added in the admin."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from alerts.models import AlertKind, AlertRule


@dataclass(frozen=True)
class Rule:
    key: str  # what its conditions' states are kept under
    name: str
    kind: str
    minutes: float
    backend: str = ""  # empty: every configured backend
    percent: float = 0.0
    min_jobs: int = 0


def settings_rules() -> list[Rule]:
    candidates = [
        Rule(
            key=f"settings.{AlertKind.FAILURE_RATE}",
            name="failure rate (settings)",
            kind=AlertKind.FAILURE_RATE,
            minutes=settings.ALERT_FAILURE_RATE_MINUTES,
            percent=settings.ALERT_FAILURE_RATE_PERCENT,
            min_jobs=settings.ALERT_FAILURE_RATE_MIN_JOBS,
        ),
        Rule(
            key=f"settings.{AlertKind.BACKEND_UNREACHABLE}",
            name="backend unreachable (settings)",
            kind=AlertKind.BACKEND_UNREACHABLE,
            minutes=settings.ALERT_UNREACHABLE_MINUTES,
        ),
        Rule(
            key=f"settings.{AlertKind.JOB_WAITING}",
            name="job waiting (settings)",
            kind=AlertKind.JOB_WAITING,
            minutes=settings.ALERT_JOB_WAIT_MINUTES,
        ),
    ]
    return [
        rule for rule in candidates if rule.minutes > 0 and (rule.kind != AlertKind.FAILURE_RATE or rule.percent > 0)
    ]


def admin_rules() -> list[Rule]:
    return [
        Rule(
            key=f"rule.{row.pk}",
            name=row.name,
            kind=row.kind,
            minutes=row.minutes,
            backend=row.backend,
            percent=row.percent or 0.0,
            min_jobs=row.min_jobs,
        )
        for row in AlertRule.objects.filter(active=True)
    ]


def rules_in_force() -> list[Rule]:
    return settings_rules() + admin_rules()
