"""Label values, bounded: a metric's series are as many as the settings and the code's enums allow,
never as many as users can type (a backend or job type not configured is counted as `other`)."""

from __future__ import annotations

from django.conf import settings

from jobs.models import FailureCategory, JobStatus

# A waiting job that routing has not bound to a backend yet (late routing leaves `backend` empty).
UNBOUND = "unbound"
OTHER = "other"

STATES = tuple(JobStatus.values)
CATEGORIES = tuple(FailureCategory.values)


def backend_label(name: str | None) -> str:
    if not name:
        return UNBOUND
    return name if name in settings.COMFYUI_BACKENDS else OTHER


def job_type_label(name: str | None) -> str:
    return name if name and name in settings.JOB_TYPES else OTHER


def category_label(name: str | None) -> str:
    if not name:
        return "none"
    return name if name in CATEGORIES else OTHER


def state_label(name: str) -> str:
    return name if name in STATES else OTHER
