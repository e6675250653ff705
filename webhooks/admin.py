"""Webhooks in the admin: who is called where, every message and every attempt with its status code.

Made through the API (which shows the secret once); here staff switch a webhook off or on and read
how its deliveries went. Secrets are never shown.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from webhooks.models import Webhook, WebhookDelivery, WebhookMessage


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class DeliveryInline(ReadOnlyInline):
    model = WebhookDelivery
    fk_name = "message"
    readonly_fields = ["attempt", "created_at", "status_code", "duration_ms", "error", "next_retry_at"]
    fields = list(readonly_fields)
    ordering = ["attempt"]


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    list_display = ["url", "owner", "scope", "events", "active", "created_at"]
    list_filter = ["active", ("job_id", admin.EmptyFieldListFilter)]
    search_fields = ["url", "owner__username", "=job_id", "=id"]
    list_select_related = ["owner"]
    show_full_result_count = False
    # Staff switch a webhook off or on and note why; what it calls and for what is its owner's.
    fields = [
        "id",
        "owner",
        "job_id",
        "url",
        "events",
        "job_types",
        "backends",
        "description",
        "active",
        "previous_secret_until",
        "created_at",
        "updated_at",
    ]
    readonly_fields = [
        "id",
        "owner",
        "job_id",
        "url",
        "events",
        "job_types",
        "backends",
        "previous_secret_until",
        "created_at",
        "updated_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # made through the API, whose answer is the only place its secret is shown

    @admin.display(description="for")
    def scope(self, webhook: Webhook) -> str:
        return f"job {webhook.job_id}" if webhook.job_id else "the owner's jobs"


@admin.register(WebhookMessage)
class WebhookMessageAdmin(admin.ModelAdmin):
    list_display = ["created_at", "event", "webhook", "job_id", "state", "attempts", "last_status_code"]
    list_filter = ["state", "event", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["=job_id", "=id", "webhook__url"]
    list_select_related = ["webhook"]
    show_full_result_count = False
    readonly_fields = [
        "id",
        "webhook",
        "event",
        "event_id",
        "job_id",
        "created_at",
        "state",
        "attempts",
        "next_attempt_at",
        "last_status_code",
        "finished_at",
        "body",
    ]
    fields = list(readonly_fields)
    inlines = [DeliveryInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["created_at", "event", "webhook", "job_id", "attempt", "status_code", "duration_ms", "error"]
    list_filter = ["event", "status_code", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["=job_id", "webhook__url"]
    list_select_related = ["webhook"]
    show_full_result_count = False
    readonly_fields = [
        "message",
        "webhook",
        "event",
        "job_id",
        "attempt",
        "created_at",
        "status_code",
        "duration_ms",
        "error",
        "response_excerpt",
        "next_retry_at",
    ]
    fields = list(readonly_fields)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
