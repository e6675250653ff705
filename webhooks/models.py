"""Webhooks: callback URLs, the messages sent to them, and every attempt at sending one.

A `Webhook` is either a user's subscription (`job_id` empty: the events of all their jobs, with
optional filters) or one job's own callback, named when the job was submitted (`job_id` set). Jobs
sit above webhooks in the layers (README, "Architecture"), so a job is named by its id, never by a
foreign key, as assets' `AssetUse` does.

A `WebhookMessage` is one event for one webhook: its `webhook-id`, the exact body sent (kept as
text, so every retry sends the same bytes) and where its delivery stands. A `WebhookDelivery` is
one attempt: status code, duration, error, and when the next one is due.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from webhooks.signing import secret_generate


class Webhook(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhooks")
    job_id = models.UUIDField(null=True, blank=True, help_text="set: this job's own callback, named at submission")
    url = models.CharField(max_length=2000)
    events = models.JSONField(default=list, help_text="event types it receives, e.g. job.completed")
    job_types = models.JSONField(default=list, blank=True, help_text="only these job types (empty: all)")
    backends = models.JSONField(default=list, blank=True, help_text="only these backends (empty: all)")
    description = models.CharField(max_length=200, blank=True)
    active = models.BooleanField(default=True)
    # Kept as is: an HMAC needs the key itself. Shown once, when made or rotated.
    secret = models.CharField(max_length=128, default=secret_generate, editable=False)
    # After a rotation the old secret signs too, until this time, so receivers can switch over.
    previous_secret = models.CharField(max_length=128, blank=True, editable=False)
    previous_secret_until = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The candidates for a job's event: its own callback, its owner's subscriptions.
            models.Index(fields=["job_id"], name="webhook_job_idx"),
            models.Index(fields=["owner", "job_id", "-created_at"], name="webhook_owner_job_idx"),
        ]
        permissions = [("receive_alerts", "Can receive alert events (fleet-wide) by webhook")]

    def __str__(self) -> str:
        scope = f"job {self.job_id}" if self.job_id else f"{self.owner_id}'s subscription"
        return f"{self.url} ({scope})"


class MessageState(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed (given up)"


class WebhookMessage(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="messages")
    event_id = models.UUIDField(help_text="the event this message carries (one message per webhook and event)")
    event = models.CharField(max_length=64)
    job_id = models.UUIDField(null=True, blank=True)
    body = models.TextField(help_text="the JSON sent, byte for byte the same on every attempt")
    created_at = models.DateTimeField(auto_now_add=True)
    state = models.CharField(max_length=16, choices=MessageState.choices, default=MessageState.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, help_text="empty: due now (while pending)")
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["webhook", "event_id"], name="webhookmessage_one_per_event"),
        ]
        indexes = [
            models.Index(fields=["state", "next_attempt_at"], name="webhookmessage_due_idx"),
            models.Index(fields=["created_at"], name="webhookmessage_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event} to {self.webhook_id} ({self.state})"

    @property
    def message_id(self) -> str:
        """The `webhook-id` header: the same on every attempt, so receivers can drop duplicates."""
        return f"msg_{self.id.hex}"


class WebhookDelivery(models.Model):
    """One attempt at sending a message."""

    message = models.ForeignKey(WebhookMessage, on_delete=models.CASCADE, related_name="deliveries")
    # Copied from the message: the per-webhook and per-job lists read one index each.
    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    job_id = models.UUIDField(null=True, blank=True)
    event = models.CharField(max_length=64)
    attempt = models.PositiveSmallIntegerField()
    created_at = models.DateTimeField(help_text="when the attempt started")
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=500, blank=True)
    response_excerpt = models.TextField(blank=True, help_text="the start of the receiver's answer")
    next_retry_at = models.DateTimeField(null=True, blank=True, help_text="empty: no further attempt")

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(fields=["webhook", "-created_at"], name="webhookdelivery_webhook_idx"),
            models.Index(fields=["job_id", "-created_at"], name="webhookdelivery_job_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event} attempt {self.attempt}: {self.status_code or self.error[:40]}"

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300
