"""Alert rules an administrator adds (besides the ones from settings), and each condition's state.

A condition is one rule about one backend. It fires once, when it starts to hold, and is resolved
once, when it stops: its `AlertState` row remembers which, so a condition that holds for hours
sends one alert, not one a minute.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models


class AlertKind(models.TextChoices):
    FAILURE_RATE = "failure_rate", "Failure rate of a backend"
    BACKEND_UNREACHABLE = "backend_unreachable", "Backend unreachable"
    JOB_WAITING = "job_waiting", "A job waiting too long"


class AlertRule(models.Model):
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=32, choices=AlertKind.choices)
    backend = models.CharField(max_length=64, blank=True, help_text="empty: every configured backend")
    minutes = models.FloatField(
        help_text="failure rate: over the last N minutes; unreachable: for N minutes; waiting: longer than N minutes"
    )
    percent = models.FloatField(
        null=True, blank=True, help_text="failure rate: at least this % of finished jobs failed"
    )
    min_jobs = models.PositiveIntegerField(default=5, help_text="failure rate: out of at least this many finished jobs")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.minutes is not None and self.minutes <= 0:
            raise ValidationError({"minutes": "a number of minutes above 0"})
        if self.kind == AlertKind.FAILURE_RATE and not (self.percent and 0 < self.percent <= 100):
            raise ValidationError({"percent": "a failure-rate rule needs a percentage above 0, at most 100"})


class AlertState(models.Model):
    rule_key = models.CharField(max_length=64, help_text="settings.<kind> or rule.<id>")
    rule_name = models.CharField(max_length=100)
    kind = models.CharField(max_length=32, choices=AlertKind.choices)
    backend = models.CharField(max_length=64)
    firing = models.BooleanField(default=False)
    since = models.DateTimeField(null=True, blank=True, help_text="when it last started to hold")
    resolved_at = models.DateTimeField(null=True, blank=True)
    message = models.CharField(max_length=500, blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-since"]
        constraints = [models.UniqueConstraint(fields=["rule_key", "backend"], name="alertstate_one_per_condition")]

    def __str__(self) -> str:
        return f"{self.rule_name} on {self.backend}: {'firing' if self.firing else 'clear'}"
