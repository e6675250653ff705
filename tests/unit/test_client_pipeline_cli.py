"""`anime-jobs pipeline submit | watch | cancel` in this process, against the real API through
Django's test client: the file is the request, --input files become assets of the named job's
loader, the live table ends with an exit code that says how the pipeline ended."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from anime_client.cli import ExitCode
from assets.models import Asset
from jobs import services
from jobs.models import FailureCategory, Job, JobStatus
from tests.factories import api_key_for
from tests.media_files import png
from tests.unit.test_client_cli import Cli
from tests.unit.test_pipelines import empty_image, reads

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(user: User, settings: Any, tmp_path: Path) -> Cli:
    settings.MEDIA_ROOT = tmp_path / "media"
    return Cli(api_key_for(user))


def pipeline_file(tmp_path: Path, **extra: Any) -> Path:
    body = {
        "name": "shot 12",
        "shot": "012",
        "job_type": "image",
        "jobs": [
            {"key": "keyframe", "workflow": reads("sketch.png", "keyframe")},
            {"key": "video", "workflow": reads("output:keyframe/0")},
        ],
        **extra,
    }
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(body))
    return path


def test_submit_uploads_the_input_for_the_named_job_and_prints_the_pipelines_id(run: Cli, tmp_path: Path) -> None:
    sketch = tmp_path / "sketch.png"
    sketch.write_bytes(png(12, 9))
    result = run("pipeline", "submit", str(pipeline_file(tmp_path)), "--input", "keyframe.1=" + str(sketch))
    assert result.exit_code == 0, result.stderr
    pipeline_id = uuid.UUID(result.stdout.strip())
    assert run.sent == ["POST /api/assets/", "POST /api/pipelines/"]
    keyframe = Job.objects.get(group_id=pipeline_id, pipeline_key="keyframe")
    video = Job.objects.get(group_id=pipeline_id, pipeline_key="video")
    assert keyframe.workflow["1"]["inputs"]["image"] == f"asset:{Asset.objects.get().id}"
    assert video.workflow["1"]["inputs"]["image"] == f"output:{keyframe.id}/0" and video.status == JobStatus.BLOCKED
    assert f"keyframe {keyframe.id}" in result.stderr


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("nope.1=x.png", "one of the keys keyframe, video"),
        ("keyframe=x.png", "one of the keys"),
        ("x", "KEY.NODE=FILE"),
    ],
)
def test_a_bad_input_is_refused_before_anything_is_sent(run: Cli, tmp_path: Path, flag: str, expected: str) -> None:
    (tmp_path / "x.png").write_bytes(png())
    result = run("pipeline", "submit", str(pipeline_file(tmp_path)), "--input", flag)
    assert result.exit_code == ExitCode.USAGE and expected in result.stderr and run.sent == []


def test_a_cycle_is_the_servers_400_with_its_keys(run: Cli, tmp_path: Path) -> None:
    jobs = [{"key": "a", "workflow": reads("output:b/0")}, {"key": "b", "workflow": reads("output:a/0")}]
    result = run("pipeline", "submit", str(pipeline_file(tmp_path, jobs=jobs)))
    assert result.exit_code == ExitCode.REFUSED and "cycle: a -> b -> a" in result.stderr


def submitted(run: Cli, tmp_path: Path) -> dict[str, Job]:
    jobs = [{"key": "keyframe", "workflow": empty_image()}, {"key": "video", "workflow": reads("output:keyframe/0")}]
    result = run("pipeline", "submit", str(pipeline_file(tmp_path, jobs=jobs)))
    assert result.exit_code == 0, result.stderr
    return {job.pipeline_key: job for job in Job.objects.filter(group_id=uuid.UUID(result.stdout.strip()))}


def test_watch_a_failed_pipeline_shows_its_jobs_and_exits_1(run: Cli, tmp_path: Path) -> None:
    jobs = submitted(run, tmp_path)
    services.job_transition(jobs["keyframe"], JobStatus.SUBMITTED)
    services.job_fail(jobs["keyframe"], FailureCategory.NODE_ERROR, "KSampler broke")
    result = run("pipeline", "watch", str(jobs["keyframe"].group_id))
    assert result.exit_code == ExitCode.JOB_FAILED, result.stderr
    assert "dependency_failed" in result.stderr and "node_error: KSampler broke" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"anime-jobs: pipeline {jobs['keyframe'].group_id} failed"


def test_cancel_then_watch_exits_3(run: Cli, tmp_path: Path) -> None:
    jobs = submitted(run, tmp_path)
    group_id = str(jobs["keyframe"].group_id)
    result = run("pipeline", "cancel", group_id)
    assert result.exit_code == 0 and result.stdout.strip() == f"pipeline {group_id}: cancelled"
    assert run("pipeline", "watch", group_id).exit_code == ExitCode.JOB_CANCELLED


def test_watch_gives_up_after_its_timeout(run: Cli, tmp_path: Path) -> None:
    jobs = submitted(run, tmp_path)
    result = run("pipeline", "watch", str(jobs["keyframe"].group_id), "--timeout", "1")
    assert result.exit_code == ExitCode.TIMED_OUT and "still queued" in result.stderr
