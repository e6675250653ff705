"""The installed `anime-jobs` command against the real system: daphne (REST and websockets), a Celery
GPU worker and the ComfyUI simulator, each a process of its own (tests/system.py).

It submits with --watch and follows the job over the websocket to the end, showing the node and
its step on the way; a workflow that fails in ComfyUI exits non-zero with ComfyUI's message; the
outputs download under the server's names.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from rest_framework.test import APIClient

from devtools.processes import Process, free_port
from jobs.models import Job, JobStatus
from tests.factories import api_key_for
from tests.integration.test_progress_live import sampler_workflow
from tests.template_workflows import publish, publisher_user

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

ANIME_JOBS = Path(sys.executable).parent / "anime-jobs"
JOB_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.MULTILINE)
PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"}
FAILING_WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 255}},
    "2": {"class_type": "TestSyncError", "inputs": {"value": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "never"}},
}


class AnimeJobs:
    """Runs the console script as a user would, through the project's process helper."""

    def __init__(self, url: str, key: str, logs: Path) -> None:
        assert ANIME_JOBS.exists(), f"{ANIME_JOBS} is missing: `make install` installs the console script"
        # The server is on loopback: never through a proxy from the environment.
        self.env = {name: value for name, value in os.environ.items() if name not in PROXY_VARIABLES}
        self.env.update(ANIME_URL=url, ANIME_API_KEY=key, PYTHONUNBUFFERED="1")
        self.logs = logs
        self.runs = 0

    def __call__(self, *args: str, timeout: float = 120.0) -> tuple[int, str]:
        self.runs += 1
        log = self.logs / f"anime-jobs-{self.runs}.log"
        with Process([str(ANIME_JOBS), *args], env=self.env, log_path=log, name=f"anime-jobs {args[0]}") as process:
            process.start()
            code = process.wait(timeout=timeout)
            return code, process.output()


@pytest.fixture
def anime_jobs(live: Any, web_server: str, user: Any, tmp_path: Path) -> AnimeJobs:
    return AnimeJobs(web_server, api_key_for(user), tmp_path)


def staff_client() -> APIClient:
    client = APIClient()
    client.force_authenticate(publisher_user())
    return client


def write_json(path: Path, content: Any) -> Path:
    path.write_text(json.dumps(content))
    return path


def test_submit_watch_shows_node_and_step_exits_0_and_the_outputs_download(anime_jobs, tmp_path):
    workflow = write_json(tmp_path / "fox.json", sampler_workflow(steps=60))
    code, output = anime_jobs("submit", str(workflow), "--priority", "7", "--watch")
    assert code == 0, output
    job = Job.objects.get(pk=JOB_ID.findall(output)[0])
    assert job.status == JobStatus.COMPLETED and job.priority == 7

    progress = [line for line in output.splitlines() if line.startswith("running")]
    sampling = [line for line in progress if "KSampler (node 3)" in line and re.search(r"step \d+/60", line)]
    assert len(sampling) >= 2, f"no live sampler steps in:\n{output}"
    assert re.search(r"\d+\.\d%", sampling[-1]), "overall progress is on the line"
    assert "no live updates" not in output, f"the websocket was not used:\n{output}"
    assert f"job {job.id} completed" in output

    target = tmp_path / "renders"
    code, output = anime_jobs("outputs", str(job.id), "--download", str(target))
    assert code == 0, output
    stored = list(job.outputs.all())
    assert stored and sorted(path.name for path in target.iterdir()) == sorted(
        Path(line).name for line in output.splitlines() if line.startswith(str(target))
    )
    assert sorted(path.read_bytes() for path in target.iterdir()) == sorted(o.file.read() for o in stored)


def test_a_failing_workflow_exits_1_with_the_category_and_comfyuis_message(anime_jobs, tmp_path):
    workflow = write_json(tmp_path / "broken.json", FAILING_WORKFLOW)
    code, output = anime_jobs("submit", str(workflow), "--watch")
    assert code == 1, output
    last = output.strip().splitlines()[-1]
    assert re.fullmatch(
        r"anime-jobs: job \S+ failed \(node_error\): .*Intentional sync execution error for testing", last
    )
    assert "Traceback" not in output


def test_the_command_reports_a_server_that_is_down_and_a_bad_key_in_one_line(anime_jobs, tmp_path, web_server):
    anime_jobs.env["ANIME_API_KEY"] = "not-a-key"
    code, output = anime_jobs("list")
    assert code == 5 and output.strip().count("\n") == 0, output
    assert "refused the API key (401)" in output

    anime_jobs.env["ANIME_URL"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    code, output = anime_jobs("watch", "00000000-0000-4000-8000-000000000000")
    assert code == 7 and "cannot reach the server" in output and "Traceback" not in output, output


def test_an_input_file_goes_up_as_an_asset_and_the_job_uses_it(anime_jobs, tmp_path, web_server, user):
    probe = requests.post(
        f"{web_server}/api/assets/", headers={"X-API-Key": anime_jobs.env["ANIME_API_KEY"]}, timeout=30
    )
    if probe.status_code == 404:
        pytest.skip("POST /api/assets/ is not served yet (the assets app is being built): the asset path waits for it")
    from PIL import Image

    keyframe = tmp_path / "keyframe.png"
    Image.new("RGB", (64, 64), (200, 40, 90)).save(keyframe)
    workflow = write_json(
        tmp_path / "i2i.json",
        {
            "12": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
            "13": {"class_type": "SaveImage", "inputs": {"images": ["12", 0], "filename_prefix": "from_asset"}},
        },
    )
    code, output = anime_jobs("submit", str(workflow), "--input", f"12={keyframe}", "--watch")
    assert code == 0, output
    job = Job.objects.get(pk=JOB_ID.findall(output)[0])
    assert job.workflow["12"]["inputs"]["image"].startswith("asset:"), job.workflow
    assert "uploaded as asset" in output
    # Watched to its end too: a job still running when the test's database is flushed deadlocked
    # the TRUNCATE on PostgreSQL (the worker was writing its last rows).
    code, again = anime_jobs("submit", str(workflow), "--input", f"12={keyframe}", "--watch")
    assert code == 0 and "already on the server as asset" in again, again


def test_a_template_run_uploads_the_keyframe_and_watches_the_job_to_its_end(anime_jobs, tmp_path):
    publish(staff_client())
    from PIL import Image

    keyframe = tmp_path / "shot12.png"
    # A colour of this run's own, so ComfyUI's cache never serves this job from an earlier run's.
    Image.new("RGB", (64, 48), (time.monotonic_ns() % 256, 90, 200)).save(keyframe)
    code, output = anime_jobs(
        "template", "run", "keyframe",
        "--set", "prompt=a fox at dusk", "--set", "seed=42", "--set", "steps=3",
        "--input", f"keyframe={keyframe}", "--shot", "sh012", "--watch",
    )  # fmt: skip
    assert code == 0, output
    job = Job.objects.get(pk=JOB_ID.findall(output)[0])
    assert job.status == JobStatus.COMPLETED and (job.template_name, job.shot) == ("keyframe", "sh012")
    assert job.workflow["5"]["inputs"]["seed"] == 42 and job.workflow["7"]["inputs"]["image"].startswith("asset:")
    assert "uploaded as asset" in output and f"job {job.id} completed" in output
