"""The admin dashboard's pages. Thin: read a service, build the charts, render."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_POST

from fleet.backends import backend_names, backend_set_draining
from monitoring.backends import backend_overview, slot_chart_data
from monitoring.dashboard_charts import backend_charts, failure_charts, generation_charts
from monitoring.failure_stats import failure_stats
from monitoring.live_queue import live_queue_jobs
from monitoring.permissions import DRAIN_BACKENDS, may_view_backends, may_view_fleet
from monitoring.stats import WINDOW_CHOICES, generation_stats, window_days

DASHBOARD_PAGES = (
    ("dashboard-statistics", "Generation statistics"),
    ("dashboard-failures", "Failure categories"),
    ("dashboard-live-queue", "Live queue"),
    ("dashboard-backends", "Backends"),
)


def _context(request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
    nav = [{"url": reverse(name), "title": label, "current": label == title} for name, label in DASHBOARD_PAGES]
    return {**admin.site.each_context(request), "title": title, "dashboard_nav": nav, **extra}


def dashboard_index_view(request: HttpRequest) -> HttpResponse:
    return HttpResponseRedirect(reverse("dashboard-statistics"))


def _require(allowed: bool) -> None:
    if not allowed:
        raise PermissionDenied


def statistics_view(request: HttpRequest) -> HttpResponse:
    _require(may_view_fleet(request.user))
    days = window_days(request.GET.get("days"))
    stats = generation_stats(days=days)
    context = _context(
        request,
        "Generation statistics",
        stats=stats,
        charts=generation_charts(stats),
        days=days,
        window_choices=WINDOW_CHOICES,
    )
    return render(request, "monitoring/statistics.html", context)


def failures_view(request: HttpRequest) -> HttpResponse:
    _require(may_view_fleet(request.user))
    days = window_days(request.GET.get("days"))
    failures = failure_stats(days=days)
    matrices = [
        {"heading": "backend", "key": "backend", "rows": failures["by_backend"]},
        {"heading": "job type", "key": "job_type", "rows": failures["by_job_type"]},
    ]
    context = _context(
        request,
        "Failure categories",
        failures=failures,
        charts=failure_charts(failures),
        matrices=matrices,
        days=days,
        window_choices=WINDOW_CHOICES,
    )
    return render(request, "monitoring/failures.html", context)


def live_queue_view(request: HttpRequest) -> HttpResponse:
    _require(may_view_fleet(request.user))
    context = _context(
        request,
        "Live queue",
        jobs=live_queue_jobs(),
        backends=backend_names(),
        change_url_template=reverse("admin:jobs_job_change", args=["00000000-0000-0000-0000-000000000000"]),
    )
    return render(request, "monitoring/live_queue.html", context)


def backends_view(request: HttpRequest) -> HttpResponse:
    _require(may_view_backends(request.user))
    backends = [
        {"backend": overview, "charts": backend_charts(slot_chart_data(overview.slots), overview.name)}
        for overview in backend_overview()
    ]
    can_drain = request.user.has_perm(DRAIN_BACKENDS)
    return render(
        request, "monitoring/backends.html", _context(request, "Backends", backends=backends, can_drain=can_drain)
    )


@require_POST
def backend_drain_view(request: HttpRequest, name: str) -> HttpResponse:
    if not request.user.has_perm(DRAIN_BACKENDS):
        raise PermissionDenied
    if name not in backend_names():
        raise Http404(f"no backend {name!r} is configured")
    backend = backend_set_draining(name, request.POST.get("draining") == "1")
    if backend.draining:
        messages.success(request, f"{name} is draining: it finishes what runs and takes nothing new.")
    else:
        messages.success(request, f"{name} is back in service.")
    return HttpResponseRedirect(reverse("dashboard-backends"))
