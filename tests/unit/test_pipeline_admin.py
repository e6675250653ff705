"""The admin's pipeline pages: the list of pipelines, a pipeline's jobs in an order where each comes
after the jobs it reads (with their upstream keys and links), its ETA as an estimate, the cancel
action; and on a job's page, the jobs it reads and the jobs that read it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from jobs.eta import eta_cache_clear
from jobs.models import Job, JobStatus, NodeTiming
from tests.unit.test_pipelines import by_key, empty_image, pipeline_body, reads, submit

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _media(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


def three_jobs(api: APIClient) -> dict[str, Job]:
    return by_key(
        submit(
            api,
            pipeline_body(
                {"key": "upscale", "workflow": reads("output:video/0")},
                {"key": "video", "workflow": reads("output:keyframe/0")},
                {"key": "keyframe", "workflow": empty_image()},
            ),
        )
    )


def learned(workflow: dict[str, Any], seconds: dict[str, float]) -> None:
    """A finished job of the same workflow and how long each node took: what the ETA learns from."""
    done = Job.objects.create(backend="default", job_type="image", workflow=workflow, status=JobStatus.COMPLETED)
    now = timezone.now()
    NodeTiming.objects.bulk_create(
        NodeTiming(
            job=done,
            node_id=node_id,
            class_type=workflow[node_id]["class_type"],
            backend="default",
            started_at=now,
            finished_at=now,
            duration=duration,
        )
        for node_id, duration in seconds.items()
    )


def test_the_pipeline_page_shows_its_jobs_in_order_with_their_upstream_keys_and_an_eta(
    api: APIClient, admin_client: Any
) -> None:
    learned(empty_image(), {"1": 30.0, "2": 10.0})
    learned(reads("output:earlier/0"), {"1": 20.0, "2": 10.0})
    eta_cache_clear()  # what other tests' jobs taught this process is forgotten
    jobs = three_jobs(api)
    group_id = jobs["keyframe"].group_id
    listing = admin_client.get("/admin/monitoring/pipeline/").content.decode()
    assert str(group_id)[:8] in listing and "shot 12" in listing

    page = admin_client.get(f"/admin/monitoring/pipeline/{group_id}/change/").content.decode()
    table = page[page.index('<table class="pipeline-jobs">') :]
    assert table.index("<td>keyframe</td>") < table.index("<td>video</td>") < table.index("<td>upscale</td>")
    assert f"/admin/jobs/job/{jobs['video'].id}/change/" in table
    assert "<td>keyframe</td>" in table.split("<td>video</td>")[1].split("</tr>")[0]
    # Three jobs one after the other: 30 + 10, then 20 + 10 twice.
    assert "about 1m 40s of run time left" in page and "estimate" in page.lower()


def test_the_cancel_action_cancels_the_pipelines_jobs(api: APIClient, admin_client: Any) -> None:
    jobs = three_jobs(api)
    response = admin_client.post(
        "/admin/monitoring/pipeline/",
        {"action": "cancel_groups", "_selected_action": [str(jobs["keyframe"].group_id)]},
    )
    assert response.status_code == 302
    assert set(Job.objects.filter(group__isnull=False).values_list("status", flat=True)) == {JobStatus.CANCELLED}


def test_a_jobs_page_links_the_jobs_it_reads_and_the_jobs_that_read_it(api: APIClient, admin_client: Any) -> None:
    jobs = three_jobs(api)
    page = admin_client.get(f"/admin/jobs/job/{jobs['video'].id}/change/").content.decode()
    assert f'<a href="/admin/jobs/job/{jobs["keyframe"].id}/change/">keyframe</a> (queued)' in page
    assert f'<a href="/admin/jobs/job/{jobs["upscale"].id}/change/">upscale</a> (blocked)' in page
