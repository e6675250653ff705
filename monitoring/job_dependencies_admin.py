"""The job page's pipeline block: the jobs it reads outputs from (upstream) and the jobs that read
its outputs (downstream), each linked, with its pipeline key and status."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html_join
from django.utils.safestring import SafeString

from jobs.dependencies import downstream_of, upstream_of
from jobs.models import Job

# A job feeds few others in practice; a page never lists more than this of either side.
LINKS_SHOWN = 50


def _job_links(jobs: list[Job]) -> SafeString | str:
    if not jobs:
        return "-"
    return format_html_join(
        ", ",
        '<a href="{}">{}</a> ({})',
        (
            (reverse("admin:jobs_job_change", args=[job.pk]), job.pipeline_key or str(job.pk)[:8], job.status)
            for job in jobs[:LINKS_SHOWN]
        ),
    )


class JobDependencyFields:
    """Read-only fields of the JobAdmin: two queries, on the job's page only."""

    @admin.display(description="reads the outputs of")
    def upstream_jobs(self, job: Job) -> SafeString | str:
        return _job_links(upstream_of(job))

    @admin.display(description="its outputs are read by")
    def downstream_jobs(self, job: Job) -> SafeString | str:
        return _job_links(downstream_of(job))
