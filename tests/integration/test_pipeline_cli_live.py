"""`anime-jobs pipeline submit --input ... --watch` as a user runs it, against the real system
(daphne, a Celery GPU worker, the simulator, each a process): a local sketch uploaded for the first
job's loader, the second job reading the first one's output, the table to the end and exit 0; a
pipeline whose first job fails in ComfyUI exits 1 with the downstream job `dependency_failed`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from jobs.models import Job, JobStatus
from tests.factories import api_key_for
from tests.integration.test_cli_live import FAILING_WORKFLOW, AnimeJobs
from tests.media_files import png

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def anime_jobs(live: Any, web_server: str, user: Any, tmp_path: Path) -> AnimeJobs:
    return AnimeJobs(web_server, api_key_for(user), tmp_path)


def loads_and_saves(reference: str, prefix: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": reference}},
        "2": {"class_type": "TestSleep", "inputs": {"value": ["1", 0], "seconds": 0.5}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def pipeline_file(tmp_path: Path, first: dict[str, Any]) -> Path:
    body = {
        "name": "cli live pipeline",
        "shot": "sh042",
        "job_type": "image",
        "jobs": [
            {"key": "keyframe", "workflow": first},
            {"key": "video", "workflow": loads_and_saves("output:keyframe/0", "cli_video")},
        ],
    }
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(body))
    return path


def test_pipeline_submit_uploads_the_input_watches_to_the_end_and_exits_0(
    anime_jobs: AnimeJobs, tmp_path: Path
) -> None:
    sketch = tmp_path / "sketch.png"
    sketch.write_bytes(png(30, 20, (time.monotonic_ns() % 256, 12, 99)))  # this run's own, never a cache hit
    path = pipeline_file(tmp_path, loads_and_saves("example.png", "cli_keyframe"))
    code, output = anime_jobs("pipeline", "submit", str(path), "--input", f"keyframe.1={sketch}", "--watch")
    assert code == 0, output
    assert "completed" in output and "video" in output
    video = Job.objects.get(pipeline_key="video", name="cli live pipeline")
    keyframe = Job.objects.get(pipeline_key="keyframe", group=video.group)
    assert (keyframe.status, video.status) == (JobStatus.COMPLETED, JobStatus.COMPLETED)
    assert keyframe.workflow["1"]["inputs"]["image"].startswith("asset:"), "the sketch was uploaded as an asset"
    assert video.workflow["1"]["inputs"]["image"] == f"output:{keyframe.id}/0"


def test_a_pipeline_whose_first_job_fails_exits_1_with_the_downstream_dependency_failed(
    anime_jobs: AnimeJobs, tmp_path: Path
) -> None:
    code, output = anime_jobs("pipeline", "submit", str(pipeline_file(tmp_path, FAILING_WORKFLOW)), "--watch")
    assert code == 1, output
    assert "dependency_failed" in output and "failed" in output.splitlines()[-1]
