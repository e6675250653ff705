"""Alerts: every minute (beat), each rule's conditions are read; a condition that starts to hold
sends its `alert.*` event once, one that stops holding sends `alert.resolved` once.

The firing state lives in `AlertState`, changed by compare-and-set, so two evaluations running at
once still send each change once. Events go through the webhooks app to the subscriptions of staff
who may receive alerts (webhooks.selectors.alert_targets).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from alerts.conditions import READERS, Condition
from alerts.models import AlertKind, AlertState
from alerts.rules import Rule, rules_in_force
from webhooks.events import ALERT_BACKEND_UNREACHABLE, ALERT_FAILURE_RATE, ALERT_JOB_WAITING, ALERT_RESOLVED, Subject
from webhooks.services import webhook_alert_event

logger = logging.getLogger(__name__)

FIRING_EVENTS = {
    AlertKind.FAILURE_RATE: ALERT_FAILURE_RATE,
    AlertKind.BACKEND_UNREACHABLE: ALERT_BACKEND_UNREACHABLE,
    AlertKind.JOB_WAITING: ALERT_JOB_WAITING,
}


@dataclass(frozen=True)
class AlertChange:
    event: str  # alert.<kind> when it started to hold, alert.resolved when it stopped
    state: AlertState


def alerts_evaluate(now: datetime | None = None) -> list[AlertChange]:
    """Read every rule's conditions, record what changed, send one event per change."""
    now = now or timezone.now()
    rules = rules_in_force()
    changes: list[AlertChange] = []
    for rule in rules:
        try:
            conditions = READERS[rule.kind](rule, now)
        except Exception:  # one broken rule must not silence the others
            logger.exception("alert rule %s could not be evaluated", rule.key)
            continue
        changes += _fire(rule, conditions, now) + _resolve(rule.key, set(conditions), now)
    for key in (
        AlertState.objects.filter(firing=True)
        .exclude(rule_key__in=[rule.key for rule in rules])
        .values_list("rule_key", flat=True)
        .distinct()
    ):
        changes += _resolve(key, set(), now)  # a rule removed or switched off: its alerts are over
    for change in changes:
        webhook_alert_event(event=change.event, subject=Subject(backend=change.state.backend), data=alert_data(change))
    return changes


def _fire(rule: Rule, conditions: dict[str, Condition], now: datetime) -> list[AlertChange]:
    changes = []
    for backend, condition in conditions.items():
        state, _ = AlertState.objects.get_or_create(
            rule_key=rule.key, backend=backend, defaults={"rule_name": rule.name, "kind": rule.kind}
        )
        if state.firing:
            continue
        fields = {
            "firing": True,
            "since": now,
            "resolved_at": None,
            "rule_name": rule.name,
            "kind": rule.kind,
            "message": condition.message[:500],
            "details": condition.details,
        }
        if AlertState.objects.filter(pk=state.pk, firing=False).update(**fields):
            for name, value in fields.items():
                setattr(state, name, value)
            logger.warning("alert: %s", condition.message)
            changes.append(AlertChange(FIRING_EVENTS[AlertKind(rule.kind)], state))
    return changes


def _resolve(rule_key: str, still_holding: set[str], now: datetime) -> list[AlertChange]:
    changes = []
    for state in AlertState.objects.filter(rule_key=rule_key, firing=True).exclude(backend__in=still_holding):
        if AlertState.objects.filter(pk=state.pk, firing=True).update(firing=False, resolved_at=now):
            state.firing, state.resolved_at = False, now
            logger.info("alert resolved: %s", state.message)
            changes.append(AlertChange(ALERT_RESOLVED, state))
    return changes


def alert_data(change: AlertChange) -> dict[str, Any]:
    state = change.state
    return {
        "alert": state.kind,
        "state": "resolved" if change.event == ALERT_RESOLVED else "firing",
        "rule": state.rule_name,
        "backend": state.backend,
        "message": state.message,
        "details": state.details,
        "since": state.since.isoformat() if state.since else None,
        "resolved_at": state.resolved_at.isoformat() if state.resolved_at else None,
        "dashboard_url": settings.WEBHOOK_PUBLIC_URL + reverse("dashboard-backends"),
    }
