"""Reads: a user's webhooks, which webhooks an event goes to, deliveries to show."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet

from webhooks.events import Subject, webhook_wants
from webhooks.models import Webhook, WebhookDelivery

RECEIVE_ALERTS = "webhooks.receive_alerts"
VIEW_ALL_DELIVERIES = "webhooks.view_webhookdelivery"
JOB_DELIVERIES_LIMIT = 200


def user_subscriptions(user: Any) -> QuerySet[Webhook]:
    """A user's own subscriptions (a job's own callback is shown with the job, not here)."""
    if not user.is_authenticated:
        return Webhook.objects.none()
    return Webhook.objects.filter(owner=user, job_id__isnull=True)


def subscription_count(owner: Any) -> int:
    return Webhook.objects.filter(owner=owner, job_id__isnull=True).count()


def may_receive_alerts(user: Any) -> bool:
    """Alerts are fleet-wide (every backend, everyone's jobs): staff who hold the permission."""
    return bool(user.is_active and user.is_staff and user.has_perm(RECEIVE_ALERTS))


def job_event_targets(event: str, subject: Subject) -> list[uuid.UUID]:
    """The active webhooks that take a job's event: its own callback, its owner's subscriptions."""
    scope = Q(job_id=subject.job_id)
    if subject.owner_id is not None:
        scope |= Q(owner_id=subject.owner_id, job_id__isnull=True)
    candidates = Webhook.objects.filter(scope, active=True).values_list("id", "events", "job_types", "backends")
    return [
        pk
        for pk, events, job_types, backends in candidates
        if webhook_wants(event, subject, events=events, job_types=job_types, backends=backends)
    ]


def alert_targets(event: str, subject: Subject) -> list[uuid.UUID]:
    """The active subscriptions that take an alert, of owners who may receive alerts."""
    candidates = Webhook.objects.filter(
        active=True, job_id__isnull=True, owner__is_active=True, owner__is_staff=True
    ).select_related("owner")
    return [
        webhook.pk
        for webhook in candidates
        if webhook_wants(event, subject, events=webhook.events, job_types=(), backends=webhook.backends)
        and may_receive_alerts(webhook.owner)
    ]


def secrets_in_use(webhook: Webhook, now: datetime) -> list[str]:
    """The secrets that sign its messages: the current one, and the previous one during its grace."""
    in_use = [webhook.secret]
    if webhook.previous_secret and webhook.previous_secret_until and webhook.previous_secret_until > now:
        in_use.append(webhook.previous_secret)
    return in_use


def webhook_deliveries(webhook: Webhook) -> QuerySet[WebhookDelivery]:
    return WebhookDelivery.objects.filter(webhook=webhook).select_related("message")


def job_deliveries(job_id: uuid.UUID, user: Any) -> list[WebhookDelivery]:
    """A job's deliveries, newest first: to the user's own webhooks; to everyone's for staff who
    may view deliveries (as in the admin)."""
    deliveries = WebhookDelivery.objects.filter(job_id=job_id).select_related("message")
    if not (user.is_staff and user.has_perm(VIEW_ALL_DELIVERIES)):
        deliveries = deliveries.filter(webhook__owner=user)
    return list(deliveries[:JOB_DELIVERIES_LIMIT])
