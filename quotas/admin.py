"""Per-user limits in the admin (staff with the model's permissions edit them), and the "Usage per
user" page beside them (staff with quotas.view_usage), at /admin/quotas/userquota/usage/."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import URLPattern, path, reverse
from django.utils import timezone

from quotas.limits import default_limits, user_limits_forget
from quotas.models import UserQuota
from quotas.overview import SORT_KEYS, sort_choice, usage_overview
from quotas.permissions import may_view_usage
from quotas.usage import utc_day_start

USAGE_PAGE_SIZE = 50
# (sort key, column title, what the column shows): the page's columns, each sortable.
USAGE_COLUMNS = (
    ("username", "user"),
    ("running", "running"),
    ("waiting", "waiting"),
    ("gpu_today", "GPU-seconds today (UTC)"),
    ("gpu_week", "GPU-seconds, 7 UTC days"),
    ("closeness", "closest limit"),
)


@admin.register(UserQuota)
class UserQuotaAdmin(admin.ModelAdmin):
    list_display = [
        "user",
        "unlimited",
        "max_running_jobs",
        "max_waiting_jobs",
        "gpu_seconds_per_day",
        "note",
        "updated_at",
    ]
    list_select_related = ["user"]
    search_fields = ["user__username", "note"]
    raw_id_fields = ["user"]
    change_list_template = "quotas/userquota_change_list.html"

    def save_model(self, request: HttpRequest, obj: UserQuota, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        user_limits_forget()  # every dispatch sees a new running or daily limit at once

    def get_urls(self) -> list[URLPattern]:
        usage = path("usage/", self.admin_site.admin_view(usage_view), name="quotas_usage")
        return [usage, *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        context = {
            **(extra_context or {}),
            "may_view_usage": may_view_usage(request.user),
            "defaults": default_limits(),
        }
        return super().changelist_view(request, extra_context=context)


def usage_view(request: HttpRequest) -> HttpResponse:
    if not may_view_usage(request.user):
        raise PermissionDenied
    now = timezone.now()
    sort = sort_choice(request.GET.get("o"))
    paginator = Paginator(usage_overview(now=now, sort=sort), USAGE_PAGE_SIZE, allow_empty_first_page=True)
    page = paginator.get_page(request.GET.get("p"))
    columns = [
        {
            "title": title,
            "sorted": sort.lstrip("-") == key,
            "descending": sort == f"-{key}",
            # A first click sorts high first (the busiest users), a second click flips it.
            "url": f"?o={key if sort == f'-{key}' else f'-{key}'}",
        }
        for key, title in USAGE_COLUMNS
        if key in SORT_KEYS
    ]
    context = {
        **admin.site.each_context(request),
        "title": "Usage per user",
        "page": page,
        "columns": columns,
        "sort": sort,
        "defaults": default_limits(),
        "day_started_at": utc_day_start(now),
        "quota_list_url": reverse("admin:quotas_userquota_changelist"),
        "may_edit": request.user.has_perm("quotas.change_userquota"),
    }
    return render(request, "quotas/usage.html", context)
