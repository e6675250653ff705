"""Alert rules (added, changed, switched off by staff) and what each condition is doing now."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from alerts.models import AlertRule, AlertState


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "backend", "minutes", "percent", "min_jobs", "active"]
    list_filter = ["kind", "active"]
    list_editable = ["active"]


@admin.register(AlertState)
class AlertStateAdmin(admin.ModelAdmin):
    list_display = ["rule_name", "backend", "firing", "since", "resolved_at", "message"]
    list_filter = ["firing", "kind", "backend"]
    readonly_fields = [
        "rule_key",
        "rule_name",
        "kind",
        "backend",
        "firing",
        "since",
        "resolved_at",
        "message",
        "details",
    ]
    fields = list(readonly_fields)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
