"""Outputs as thumbnails in the admin: the job list's first-output column and the job page's outputs.

The picture is the output's stored thumbnail (jobs.thumbnails: a small WebP), never the full image
scaled down by the browser: a page of 50 jobs of 4K images would otherwise fetch hundreds of
megabytes. An output without one (a video, a sound, an image that could not be decoded) is named
by its kind instead: no made-up picture.

The list reads the first output of every job on the page in one query, whatever the page's size
(a sliced Prefetch: a window over the page's job ids), never one query per row.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from jobs import selectors
from jobs.downloads import thumbnail_response
from jobs.models import Job, JobOutput

FIRST_OUTPUTS = "first_outputs"
LIST_BOX = 80  # pixels: the list shows each thumbnail within this square
KIND_WORDS = ("image", "video", "audio")
_PLACEHOLDER_STYLE = "display:inline-block;padding:2px 6px;border-radius:3px;background:#6c757d;color:#fff"


def first_output_prefetch() -> Prefetch:
    columns = ("id", "job_id", "comfy_filename", "media_type", "thumbnail", "thumbnail_width", "thumbnail_height")
    first = JobOutput.objects.order_by("id").only(*columns)[:1]
    return Prefetch("outputs", queryset=first, to_attr=FIRST_OUTPUTS)


def thumbnail_url(output: JobOutput) -> str:
    return reverse("admin:jobs_job_output_thumbnail", args=[output.job_id, output.pk])


def output_thumbnail_html(output: JobOutput | None, *, box: int) -> SafeString | str:
    """The output's thumbnail within `box` pixels (width and height given, loaded lazily); its
    kind as a word when it has none."""
    if output is None:
        return "-"
    if not output.thumbnail:
        kind = output.media_type.split("/", 1)[0]
        return format_html(
            '<span class="output-kind" style="{}">{}</span>', _PLACEHOLDER_STYLE, kind if kind in KIND_WORDS else "file"
        )
    width, height = fitted(output.thumbnail_width, output.thumbnail_height, box)
    return format_html(
        '<img class="output-thumbnail" src="{}" width="{}" height="{}" loading="lazy" alt="{}">',
        thumbnail_url(output),
        width,
        height,
        output.comfy_filename,
    )


def fitted(width: int, height: int, box: int) -> tuple[int, int]:
    """`width` x `height` scaled down to fit `box` x `box`, at least 1 x 1."""
    longest = max(width, height, 1)
    scale = min(1.0, box / longest)
    return max(1, round(width * scale)), max(1, round(height * scale))


class OutputThumbnailColumn(admin.ModelAdmin):
    """JobAdmin's first-output column, the prefetch it reads, and the admin's URL for thumbnails."""

    def get_queryset(self, request: HttpRequest) -> QuerySet[Job]:
        return super().get_queryset(request).prefetch_related(first_output_prefetch())

    @admin.display(description="output")
    def first_output(self, job: Job) -> SafeString | str:
        first = getattr(job, FIRST_OUTPUTS, None)
        return output_thumbnail_html(first[0] if first else None, box=LIST_BOX)

    def output_thumbnail_view(self, request: HttpRequest, object_id: str, output_id: int) -> HttpResponseBase:
        """Whoever may see the job may see its thumbnail: the API's rule (jobs.selectors.visible_jobs)."""
        job = get_object_or_404(selectors.visible_jobs(request.user), pk=object_id)
        return thumbnail_response(request, get_object_or_404(job.outputs, pk=output_id))
