"""What a job's admin page shows below its fields: input assets, outputs, timeline, node timings, attempts."""

from __future__ import annotations

from typing import Any

from django.urls import reverse

from assets.admin import asset_thumbnail
from assets.media_types import RASTER_IMAGE_TYPES
from assets.selectors import workflow_input_assets
from jobs.models import FINAL_STATUSES, Job, JobStatus
from monitoring.charts import hbar_chart
from monitoring.output_thumbnails import thumbnail_url

TIMELINE_LIMIT = 2_000
RETRYABLE_STATUSES = frozenset({JobStatus.FAILED, JobStatus.CANCELLED})


def job_story(job: Job) -> dict[str, Any]:
    """What the job page shows below the fields: input assets, outputs, timeline, node timings, attempts."""
    timings = list(job.node_timings.order_by("attempt", "started_at"))
    outputs = [
        {
            "output": output,
            "url": reverse("job-output-download", kwargs={"pk": job.pk, "output_id": output.pk}),
            # Its stored thumbnail (jobs.thumbnails); an image stored before there were any is shown
            # scaled down (make_thumbnails makes theirs). Only for what its bytes showed to be a
            # raster image: an SVG "image" is a document that runs script.
            "thumbnail_url": thumbnail_url(output) if output.thumbnail else None,
            "is_image": output.media_type in RASTER_IMAGE_TYPES,
        }
        for output in job.outputs.all()
    ]
    chart = None
    if timings:
        chart = hbar_chart(
            [f"#{t.node_id} {t.class_type}" for t in timings],
            [round(t.duration, 2) for t in timings],
            title="Node timings (seconds)",
            unit=" s",
            width=760,
        )
    return {
        "job_inputs": [
            {"reference": reference, "asset": asset, "thumbnail": asset_thumbnail(asset) if asset else "-"}
            for reference, asset in workflow_input_assets(job.workflow)
        ],
        "job_outputs": outputs,
        "job_events": list(job.events.order_by("seq")[:TIMELINE_LIMIT]),
        "timeline_limit": TIMELINE_LIMIT,
        "job_timings": timings,
        "job_timings_chart": chart,
        "job_attempts": list(job.attempts.order_by("number")),
        "can_cancel": job.status not in FINAL_STATUSES and job.cancel_requested_at is None,
        "can_retry": job.status in RETRYABLE_STATUSES,
    }
