"""The configured ComfyUI backends for the dashboard: health over time, what each one has waiting and running."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count
from django.utils import timezone

from fleet.backends import backend_names
from fleet.models import Backend
from jobs.models import ACTIVE_STATUSES, WAITING_STATUSES, Job
from monitoring.models import BackendHealthSample

HEALTH_WINDOW = timedelta(hours=24)
HEALTH_SLOTS = 96  # 15-minute slots over the window: enough for a glance, few points to draw


@dataclass
class HealthSlot:
    start: datetime
    reachable: bool | None = None
    queue_length: int | None = None
    vram_used_fraction: float | None = None


@dataclass
class BackendOverview:
    name: str
    url: str | None
    draining: bool
    draining_since: datetime | None
    latest: BackendHealthSample | None
    waiting: int
    running: int
    slots: list[HealthSlot] = field(default_factory=list)


def _health_slots(name: str, now: datetime) -> list[HealthSlot]:
    """The window cut into slots: down if any probe in it failed, the longest queue, the most VRAM used."""
    start = now - HEALTH_WINDOW
    width = HEALTH_WINDOW / HEALTH_SLOTS
    slots = [HealthSlot(start=start + width * index) for index in range(HEALTH_SLOTS)]
    samples = BackendHealthSample.objects.filter(backend=name, checked_at__gte=start).values(
        "checked_at", "reachable", "queue_running", "queue_pending", "vram_total", "vram_free"
    )
    for sample in samples:
        slot = slots[min(int((sample["checked_at"] - start) / width), HEALTH_SLOTS - 1)]
        slot.reachable = sample["reachable"] if slot.reachable is None else slot.reachable and sample["reachable"]
        if not sample["reachable"]:
            continue
        queue = sample["queue_running"] + sample["queue_pending"]
        slot.queue_length = max(slot.queue_length or 0, queue)
        if sample["vram_total"]:
            used = 1 - (sample["vram_free"] or 0) / sample["vram_total"]
            slot.vram_used_fraction = max(slot.vram_used_fraction or 0.0, used)
    return slots


def backend_overview(now: datetime | None = None) -> list[BackendOverview]:
    now = now or timezone.now()
    names = backend_names()
    rows = {row.name: row for row in Backend.objects.filter(name__in=names)}
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    active = Job.objects.filter(status__in=[*WAITING_STATUSES, *ACTIVE_STATUSES], backend__in=names)
    for group in active.values("backend", "status").annotate(n=Count("pk")).order_by():
        counts[group["backend"]][group["status"]] += group["n"]
    overviews = []
    for name in names:
        row = rows.get(name)
        waiting = sum(counts[name][status] for status in WAITING_STATUSES)
        overviews.append(
            BackendOverview(
                name=name,
                url=settings.COMFYUI_BACKENDS.get(name),
                draining=bool(row and row.draining),
                draining_since=row.draining_since if row else None,
                latest=BackendHealthSample.objects.filter(backend=name).order_by("-checked_at").first(),
                waiting=waiting,
                running=sum(counts[name].values()) - waiting,
                slots=_health_slots(name, now),
            )
        )
    return overviews


def slot_chart_data(slots: list[HealthSlot]) -> dict[str, Any]:
    return {
        "reachable": [slot.reachable for slot in slots],
        "queue": [slot.queue_length for slot in slots],
        "vram": [
            None if slot.vram_used_fraction is None else round(slot.vram_used_fraction * 100, 1) for slot in slots
        ],
        "labels": [timezone.localtime(slot.start).strftime("%H:%M") for slot in slots],
    }
