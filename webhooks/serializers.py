"""What a client may send for a webhook (a URL we may call, known events, known filters) and what it sees."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

from webhooks.addresses import UnsafeURL, webhook_target
from webhooks.events import EVENTS, JOB_DEFAULT_EVENTS, JOB_EVENTS, is_alert
from webhooks.models import Webhook, WebhookDelivery
from webhooks.selectors import may_receive_alerts
from webhooks.signing import secret_problem


class WebhookURLField(serializers.CharField):
    """An http(s) URL whose host resolves only to public addresses (or an administrator allowed it)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=2000, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        url = super().to_internal_value(data)
        try:
            webhook_target(url, allowed_hosts=settings.WEBHOOK_ALLOWED_HOSTS)
        except UnsafeURL as exc:
            raise serializers.ValidationError(str(exc)) from exc
        return url


def _distinct(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


class WebhookSerializer(serializers.ModelSerializer):
    """A user's subscription. The secret is never shown here: only when made or rotated."""

    url = WebhookURLField()
    events = serializers.ListField(child=serializers.ChoiceField(choices=EVENTS), min_length=1, max_length=20)
    job_types = serializers.ListField(child=serializers.CharField(max_length=32), required=False, max_length=20)
    backends = serializers.ListField(child=serializers.CharField(max_length=64), required=False, max_length=50)

    class Meta:
        model = Webhook
        fields = ["id", "url", "events", "job_types", "backends", "description", "active", "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at"]

    def validate_events(self, value: list[str]) -> list[str]:
        alerts = [event for event in value if is_alert(event)]
        user = self.context["user"]
        if alerts and not may_receive_alerts(user):
            raise serializers.ValidationError(
                f"{', '.join(alerts)}: alerts are fleet-wide, for staff with the permission to receive them"
            )
        return _distinct(value)

    def validate_job_types(self, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(settings.JOB_TYPES))
        if unknown:
            raise serializers.ValidationError(f"unknown job types {unknown}; expected some of {settings.JOB_TYPES}")
        return _distinct(value)

    def validate_backends(self, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(settings.COMFYUI_BACKENDS))
        if unknown:
            raise serializers.ValidationError(
                f"unknown backends {unknown}; configured: {sorted(settings.COMFYUI_BACKENDS)}"
            )
        return _distinct(value)


class JobWebhookSerializer(serializers.Serializer):
    """`"webhook": {"url": ..., "events": [...], "secret": optional}` in a job's submission."""

    url = WebhookURLField()
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=JOB_EVENTS), min_length=1, default=lambda: list(JOB_DEFAULT_EVENTS)
    )
    secret = serializers.CharField(
        required=False, max_length=128, help_text="whsec_ + base64 of 24-64 bytes; a new one when absent"
    )

    def validate_events(self, value: list[str]) -> list[str]:
        return _distinct(value)

    def validate_secret(self, value: str) -> str:
        problem = secret_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value


def job_webhook_shown(webhook: Webhook) -> dict[str, Any]:
    """A job's own callback, secret included: only in the answer to the submission that named it."""
    return {"id": str(webhook.pk), "url": webhook.url, "events": webhook.events, "secret": webhook.secret}


class WebhookDeliverySerializer(serializers.ModelSerializer):
    message_id = serializers.CharField(source="message.message_id", read_only=True)
    outcome = serializers.SerializerMethodField()

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "webhook",
            "message_id",
            "event",
            "job_id",
            "attempt",
            "created_at",
            "status_code",
            "duration_ms",
            "error",
            "response_excerpt",
            "next_retry_at",
            "outcome",
        ]
        read_only_fields = fields

    def get_outcome(self, delivery: WebhookDelivery) -> str:
        """delivered (a 2xx), retrying (another attempt is due), or failed (no further attempt)."""
        if delivery.succeeded:
            return "delivered"
        return "retrying" if delivery.next_retry_at else "failed"
