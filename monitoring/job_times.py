"""A job's times in the admin, to the second and in the project's time zone (TIME_ZONE):
`2026-12-05 14:03:27`, and its queue wait and run time as `12s`, `1m 10s`, `2h 03m 04s`.

The admin's own date format drops the seconds ("Dec. 5, 2026, 2:03 p.m."), which is no use for
telling when a 40-second job started and ended; so the columns and the job page's fields are these.
"""

from __future__ import annotations

from datetime import datetime

from django.contrib import admin
from django.utils import timezone

from jobs.models import Job

NONE = "-"


def moment_text(moment: datetime | None) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S") if moment else NONE


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return NONE
    minutes, secs = divmod(max(0, round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


class JobTimesColumns:
    """Columns and read-only fields of JobAdmin: each time to the second, each duration too."""

    @admin.display(description="created", ordering="created_at")
    def created(self, job: Job) -> str:
        return moment_text(job.created_at)

    @admin.display(description="submitted")
    def submitted(self, job: Job) -> str:
        return moment_text(job.submitted_at)

    @admin.display(description="started")
    def started(self, job: Job) -> str:
        return moment_text(job.started_at)

    @admin.display(description="finished")
    def finished(self, job: Job) -> str:
        return moment_text(job.finished_at)

    @admin.display(description="ETA (estimate)")
    def eta_finish(self, job: Job) -> str:
        return moment_text(job.eta_finish_at)

    @admin.display(description="cancel requested")
    def cancel_requested(self, job: Job) -> str:
        return moment_text(job.cancel_requested_at)

    @admin.display(description="heartbeat")
    def heartbeat(self, job: Job) -> str:
        return moment_text(job.heartbeat_at)

    @admin.display(description="queue wait")
    def wait(self, job: Job) -> str:
        return duration_text(job.wait_seconds)

    @admin.display(description="run time")
    def run_time(self, job: Job) -> str:
        return duration_text(job.run_seconds)
