"""Formatting and drill-down links for the dashboard templates."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlencode

from django import template
from django.urls import get_script_prefix, reverse

register = template.Library()

# Dashboard names -> the job changelist's filter parameters (see jobs.admin.JobAdmin.list_filter).
CHANGELIST_PARAMS = {
    "status": "status__exact",
    "failure_category": "failure_category__exact",
    "backend": "backend",
    "job_type": "job_type",
    "error_message": "error_message",
    "finished_from": "finished_at__gte",
    "finished_to": "finished_at__lt",
}


@register.filter
def seconds(value: float | None) -> str:
    """12.3 s, 4 min 05 s, 1 h 02 min; a dash when there is nothing to say."""
    if value is None or value == "":
        return "–"
    value = float(value)
    if value < 60:
        return f"{value:.1f} s"
    minutes, secs = divmod(round(value), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@register.filter
def percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"


@register.filter
def item(container: Any, key: Any) -> Any:
    """`row|item:name`: a dict value or list element named by a variable, which templates cannot do."""
    return container[key]


@register.filter
def compact(data: Any) -> str:
    """A timeline event's data as `key: value` pairs, numbers rounded: easier to scan than a dict."""
    if not isinstance(data, dict):
        return "" if data in (None, "") else str(data)
    parts = []
    for key, value in data.items():
        if value in (None, "", [], {}):
            continue
        parts.append(f"{key}: {round(value, 3) if isinstance(value, float) else value}")
    return ", ".join(parts)


@lru_cache(maxsize=8)
def _changelist_path(script_prefix: str) -> str:
    """The changelist's path under this script prefix (what reverse() reads from the request).

    The failures page links ~1,300 numbers over 90 days: a reverse() and a urlencode each were
    half of its time."""
    return reverse("admin:jobs_job_changelist")


@lru_cache(maxsize=4096)
def _param(name: str, value: str) -> str:
    # The same few statuses, categories and days recur in every row: each is quoted once.
    return urlencode({CHANGELIST_PARAMS[name]: value})


@register.simple_tag
def jobs_url(**filters: Any) -> str:
    """The job changelist filtered to exactly the jobs behind a number on a dashboard page."""
    params = [
        _param(name, value.isoformat(sep=" ") if isinstance(value, datetime) else str(value))
        for name, value in filters.items()
        if value not in (None, "")
    ]
    return f"{_changelist_path(get_script_prefix())}?{'&'.join(params)}"
