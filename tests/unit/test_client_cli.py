"""`anime-jobs` in this process, against the real API through Django's test client
(tests/unit/django_transport.py): arguments, what reaches the server, and one clear line on
stderr with its own exit code for each way a request can fail."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from django.contrib.auth.models import Permission, User
from django.core.files.base import ContentFile

from anime_client import Client
from anime_client import client as client_module
from anime_client.cli import ExitCode, cli
from devtools.processes import free_port
from jobs.models import FailureCategory, Job, JobOutput, JobStatus
from monitoring.rollups import stats_rollup_refresh
from tests.factories import SLEEP_WORKFLOW, JobFactory, UserFactory, api_key_for
from tests.unit.django_transport import BASE_URL, django_session
from tests.unit.test_stats import finished_job

pytestmark = pytest.mark.django_db

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
UI_FORMAT = {"last_node_id": 3, "nodes": [{"id": 1, "type": "LoadImage"}], "links": [], "version": 0.4}


def refuse_websocket(url: str, headers: Mapping[str, str], timeout: float) -> Any:
    raise ConnectionRefusedError(111, "Connection refused")


class Cli:
    """Runs anime-jobs with a client whose HTTP goes to Django in this process."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.session, self.adapter = django_session()

    def factory(self, url: str, api_key: str, **kwargs: Any) -> Client:
        return Client(url, api_key, session=self.session, open_socket=refuse_websocket, poll_seconds=0.01, **kwargs)

    def __call__(self, *args: str, key: str | None = None, url: str = BASE_URL, env: dict | None = None) -> Result:
        options = ["--url", url] + (["--api-key", key or self.key] if (key or self.key) else [])
        return CliRunner().invoke(cli, [*options, *args], obj=self.factory, env=env)

    @property
    def sent(self) -> list[str]:
        return [f"{request.method} {request.path_url}" for request in self.adapter.sent]


@pytest.fixture
def run(user: User) -> Cli:
    return Cli(api_key_for(user))


@pytest.fixture
def workflow_file(tmp_path: Path) -> Callable[[Any], Path]:
    def write(content: Any, name: str = "workflow.json") -> Path:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return path

    return write


def one_error_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert lines, f"nothing on stderr; stdout: {result.stdout!r}"
    assert "Traceback" not in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return lines[-1]


# --- arguments ----------------------------------------------------------------------------------


def test_submit_sends_the_workflow_with_priority_type_and_prints_the_job_id(run, workflow_file, user):
    result = run("submit", str(workflow_file(SLEEP_WORKFLOW)), "--priority", "7", "--job-type", "video")
    assert result.exit_code == 0, result.stderr
    job = Job.objects.get()
    assert result.stdout.strip() == str(job.id)
    assert (job.priority, job.job_type, job.user, job.workflow) == (7, "video", user, SLEEP_WORKFLOW)
    assert f"job {job.id} queued" in result.stderr


def test_url_and_key_come_from_the_environment(workflow_file, user):
    run = Cli(key="")
    env = {"ANIME_URL": BASE_URL, "ANIME_API_KEY": api_key_for(user)}
    result = CliRunner().invoke(cli, ["list"], obj=run.factory, env=env)
    assert result.exit_code == 0, result.stderr
    assert run.sent == ["GET /api/jobs/?page_size=20"]


@pytest.mark.parametrize(
    "args,expected",
    [
        (["submit", "w.json", "--priority", "12"], "12 is not in the range 0<=x<=9"),
        (["list", "--status", "exploded"], "'exploded' is not one of"),
        (["report", "--since", "3d"], "the server keeps statistics for 1d, 7d, 30d, 90d"),
        (["list", "--limit", "0"], "0 is not in the range"),
        (["outputs"], "Missing argument 'JOB'"),
    ],
)
def test_bad_arguments_are_a_usage_error_before_any_request(run, args, expected):
    result = run(*args)
    assert result.exit_code == ExitCode.USAGE
    assert expected in result.stderr
    assert run.sent == []


def test_no_api_key_says_where_to_put_one(workflow_file):
    run = Cli(key="")
    result = run("list", env={"ANIME_API_KEY": ""})
    assert result.exit_code == ExitCode.USAGE
    assert one_error_line(result) == "anime-jobs: no API key: pass --api-key or set ANIME_API_KEY"


# --- the workflow file ---------------------------------------------------------------------------


def test_a_ui_format_workflow_is_refused_before_any_request_saying_how_to_export(run, workflow_file):
    result = run("submit", str(workflow_file(UI_FORMAT, "shot.json")))
    assert result.exit_code == ExitCode.USAGE
    line = one_error_line(result)
    assert "shot.json is in ComfyUI's UI format" in line
    assert "Export (API)" in line and "Save (API)" in line
    assert run.sent == [] and not Job.objects.exists()


@pytest.mark.parametrize(
    "content,expected",
    [
        ("{not json", "is not JSON: Expecting property name enclosed in double quotes at line 1, column 2"),
        ("[1, 2]", "not a workflow in ComfyUI's API format"),
        ({"1": {"inputs": {}}}, "node '1' has no class_type"),
        ({"prompt": SLEEP_WORKFLOW, "client_id": "x"}, 'a /prompt request body; submit the object under its "prompt"'),
    ],
)
def test_a_workflow_that_is_not_api_format_json_is_refused_locally(run, workflow_file, content, expected):
    result = run("submit", str(workflow_file(content)))
    assert result.exit_code == ExitCode.USAGE
    assert expected in one_error_line(result)
    assert run.sent == []


def test_a_missing_workflow_file_is_named(run, tmp_path):
    result = run("submit", str(tmp_path / "nowhere.json"))
    assert result.exit_code == ExitCode.USAGE
    assert "cannot read the workflow" in one_error_line(result) and "nowhere.json" in result.stderr


@pytest.mark.parametrize(
    "flag,expected",
    [
        ("9=key.png", "node '9' is not in the workflow (its nodes: 1, 2, 3)"),
        ("1=key.png", "node 1 (EmptyImage) has no input holding a file name; name one: --input 1.INPUT=FILE"),
        ("1.colour=key.png", "node 1 (EmptyImage) has no input 'colour'; its inputs: width, height"),
        ("1.width=key.png", "node 1's input 'width' is not a file name (64)"),
        ("12", "expected NODE=FILE or NODE.INPUT=FILE"),
        ("3.filename_prefix=absent.png", "--input 3.filename_prefix=absent.png: no such file"),
    ],
)
def test_a_bad_input_flag_is_refused_before_anything_is_uploaded(run, workflow_file, tmp_path, flag, expected):
    (tmp_path / "key.png").write_bytes(PNG)
    flag = flag.replace("key.png", str(tmp_path / "key.png"))
    result = run("submit", str(workflow_file(SLEEP_WORKFLOW)), "--input", flag)
    assert result.exit_code == ExitCode.USAGE
    assert expected in one_error_line(result)
    assert run.sent == []


# --- each way a request fails: one line, its own exit code ----------------------------------------


@pytest.mark.parametrize(
    "command,what",
    [(["submit", "WORKFLOW"], "submit"), (["watch", "j1"], "job j1"), (["report"], "statistics")],
)
def test_server_down_is_one_line_and_exit_7(run, workflow_file, command, what):
    port = free_port()
    args = [str(workflow_file(SLEEP_WORKFLOW)) if arg == "WORKFLOW" else arg for arg in command]
    result = run(*args, url=f"http://127.0.0.1:{port}")
    assert result.exit_code == ExitCode.UNREACHABLE
    assert result.stderr.strip() == (
        f"anime-jobs: {what}: cannot reach the server at http://127.0.0.1:{port}/ (Connection refused)"
    )


def test_a_bad_key_is_exit_5_and_says_which_setting_to_check(run):
    result = run("list", key="not-a-key")
    assert result.exit_code == ExitCode.NOT_ALLOWED
    assert one_error_line(result) == (
        "anime-jobs: list jobs: the server refused the API key (401): unknown, expired or revoked API key; "
        "check --api-key or ANIME_API_KEY"
    )


def test_a_forbidden_request_is_exit_5_with_the_servers_reason(run):
    result = run("report")  # an artist's key: statistics are for staff with the permission
    assert result.exit_code == ExitCode.NOT_ALLOWED
    assert one_error_line(result) == (
        "anime-jobs: statistics: not allowed (403): "
        "fleet-wide statistics are for staff with the permission to view jobs"
    )


def test_a_400_prints_the_reason_the_server_gave(run, workflow_file):
    result = run("submit", str(workflow_file(SLEEP_WORKFLOW)), "--job-type", "hologram")
    assert result.exit_code == ExitCode.REFUSED
    line = one_error_line(result)
    assert line.startswith("anime-jobs: submit: the server refused the request (400): job_type: unknown job type")
    assert "'hologram'" in line


def test_a_workflow_the_server_refuses_names_the_node(run, workflow_file):
    broken = {"1": {"class_type": "SaveImage", "inputs": {"images": ["9", 0]}}}
    result = run("submit", str(workflow_file(broken)))
    assert result.exit_code == ExitCode.REFUSED
    assert "(400): workflow:" in one_error_line(result) and "missing node 9" in result.stderr


def test_an_unknown_job_is_a_404(run):
    missing = uuid.uuid4()
    for command in ("watch", "cancel", "retry", "outputs"):
        result = run(command, str(missing))
        assert result.exit_code == ExitCode.REFUSED, command
        assert "not found (404)" in one_error_line(result), command


def test_too_many_submits_say_when_to_retry(run, workflow_file, throttle_rates):
    throttle_rates(anon="100/min", user="1/min", submit="1/min")
    path = str(workflow_file(SLEEP_WORKFLOW))
    assert run("submit", path).exit_code == 0
    result = run("submit", path)
    assert result.exit_code == ExitCode.RATE_LIMITED
    line = one_error_line(result)
    assert line.startswith("anime-jobs: submit: too many requests (429); retry in ")
    seconds = int(line.split("retry in ")[1].split(" s")[0])
    assert 0 < seconds <= 60


def test_cancelling_a_finished_job_is_refused_with_the_reason(run, user):
    job = JobFactory.create(user=user, status=JobStatus.COMPLETED)
    result = run("cancel", str(job.id))
    assert result.exit_code == ExitCode.REFUSED
    assert (
        one_error_line(result)
        == f"anime-jobs: cancel job {job.id}: refused (409): job is already completed; nothing to cancel"
    )


# --- the commands ---------------------------------------------------------------------------------


def test_list_is_a_table_filtered_as_asked(run, user):
    failed = JobFactory.create(user=user, status=JobStatus.FAILED, failure_category=FailureCategory.OUT_OF_MEMORY)
    JobFactory.create(user=user, status=JobStatus.QUEUED)
    result = run("list", "--status", "failed")
    assert result.exit_code == 0, result.stderr
    assert str(failed.id) in result.stdout and "out_of_memory" in result.stdout
    assert result.stdout.count("queued") == 0
    assert run.sent == ["GET /api/jobs/?status=failed&page_size=20"]


def test_list_follows_the_cursor_up_to_the_limit(run, user, monkeypatch):
    for _ in range(5):
        JobFactory.create(user=user)
    client = run.factory(BASE_URL, run.key)
    assert len(client.jobs(limit=3)) == 3
    monkeypatch.setattr(client_module, "MAX_PAGE_SIZE", 2)
    paged = client.jobs(limit=5)
    assert [job.id for job in paged] == [str(job.id) for job in Job.objects.order_by("-created_at")]
    assert sum("cursor=" in line for line in run.sent) == 2


def test_cancel_a_waiting_job(run, user):
    job = JobFactory.create(user=user)
    result = run("cancel", str(job.id))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == f"job {job.id} cancelled"
    assert Job.objects.get(pk=job.id).status == JobStatus.CANCELLED


def test_retry_prints_the_new_jobs_id(run, user):
    job = JobFactory.create(user=user, status=JobStatus.FAILED, failure_category=FailureCategory.LOST)
    result = run("retry", str(job.id))
    assert result.exit_code == 0, result.stderr
    new = Job.objects.get(retry_of=job)
    assert result.stdout.strip() == str(new.id)


def completed_job(user: User, outputs: dict[str, bytes]) -> Job:
    job = JobFactory.create(user=user, status=JobStatus.COMPLETED, progress=1.0)
    for index, (name, content) in enumerate(outputs.items()):
        output = JobOutput(job=job, node_id=str(index + 3), kind="images", comfy_filename=name, media_type="image/png")
        output.size_bytes = len(content)
        output.file.save(name, ContentFile(content), save=True)
    return job


def test_watch_a_completed_job_exits_0(run, user, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    job = completed_job(user, {"fox_00001_.png": PNG})
    result = run("watch", str(job.id))
    assert result.exit_code == 0, result.stderr
    assert "completed" in result.stderr and "1 output" in result.stderr
    assert "no live updates" in result.stderr, "the websocket was refused: it says it polls instead"


def test_watch_a_failed_job_prints_the_category_and_comfyuis_message(run, user):
    job = JobFactory.create(
        user=user,
        status=JobStatus.FAILED,
        failure_category=FailureCategory.NODE_ERROR,
        error_message="TestSyncError #2: RuntimeError: Intentional sync execution error for testing",
    )
    result = run("watch", str(job.id))
    assert result.exit_code == ExitCode.JOB_FAILED
    assert one_error_line(result) == (
        f"anime-jobs: job {job.id} failed (node_error): "
        "TestSyncError #2: RuntimeError: Intentional sync execution error for testing"
    )


def test_watch_a_cancelled_job_exits_3(run, user):
    job = JobFactory.create(user=user, status=JobStatus.CANCELLED)
    result = run("watch", str(job.id))
    assert result.exit_code == ExitCode.JOB_CANCELLED
    assert one_error_line(result) == f"anime-jobs: job {job.id} was cancelled"


def test_watch_gives_up_after_its_timeout_and_says_the_job_goes_on(run, user):
    job = JobFactory.create(user=user)
    result = run("watch", str(job.id), "--timeout", "1")
    assert result.exit_code == ExitCode.TIMED_OUT
    assert one_error_line(result) == f"anime-jobs: job {job.id} is still queued after 1 s"


def test_help_lists_the_commands_and_the_exit_codes(run):
    result = run("--help")
    assert result.exit_code == 0
    for command in ("submit", "watch", "list", "cancel", "retry", "outputs", "report"):
        assert command in result.stdout
    assert "1 the job failed" in result.stdout and "6 rate-limited (429)" in result.stdout


def test_outputs_are_listed_and_downloaded_under_the_servers_names(run, user, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    job = completed_job(user, {"fox_00001_.png": PNG, "fox_00002_.png": PNG + b"2"})
    listed = run("outputs", str(job.id))
    assert listed.exit_code == 0, listed.stderr
    assert "fox_00001_.png" in listed.stdout and "image/png" in listed.stdout

    target = tmp_path / "renders"
    result = run("outputs", str(job.id), "--download", str(target))
    assert result.exit_code == 0, result.stderr
    assert sorted(path.name for path in target.iterdir()) == ["fox_00001_.png", "fox_00002_.png"]
    assert (target / "fox_00002_.png").read_bytes() == PNG + b"2"
    assert result.stdout.split() == [str(target / "fox_00001_.png"), str(target / "fox_00002_.png")]

    again = run("outputs", str(job.id), "--download", str(target))
    assert again.exit_code == ExitCode.REFUSED
    assert "exists; not overwritten (use --overwrite)" in again.stderr
    assert run("outputs", str(job.id), "--download", str(target), "--overwrite").exit_code == 0


def test_outputs_of_an_unfinished_job_say_when_they_come(run, user):
    job = JobFactory.create(user=user, status=JobStatus.RUNNING)
    result = run("outputs", str(job.id))
    assert result.exit_code == ExitCode.REFUSED
    assert one_error_line(result) == f"anime-jobs: job {job.id} is running: outputs come when it completes"


@pytest.fixture
def staff_run(django_user_model) -> Cli:
    lead = UserFactory.create(username="lead", is_staff=True)
    lead.user_permissions.add(Permission.objects.get(codename="view_job"))
    return Cli(api_key_for(django_user_model.objects.get(pk=lead.pk)))


@pytest.fixture
def history() -> None:
    for index in range(4):
        finished_job(run=30 + index, wait=5, backend="gpu1")
    finished_job(job_type="video", run=600, backend="gpu2")
    finished_job(status=JobStatus.FAILED, category=FailureCategory.OUT_OF_MEMORY, run=12, backend="gpu2")
    finished_job(status=JobStatus.FAILED, category=FailureCategory.OUT_OF_MEMORY, run=14, backend="gpu2")
    finished_job(status=JobStatus.FAILED, category=FailureCategory.NODE_ERROR, run=3, backend="gpu1")
    stats_rollup_refresh()


def test_report_as_text(staff_run, history):
    result = staff_run("report", "--since", "7d")
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    for expected in ("per job type", "per backend", "failures per category", "gpu1", "gpu2", "out_of_memory"):
        assert expected in text
    assert "57.1%" in text  # image: 4 completed, 3 failed
    assert staff_run.sent == ["GET /api/stats/?days=7"]


def test_report_as_json_has_the_servers_figures(staff_run, history):
    result = staff_run("report", "--since", "30d", "--format", "json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["window_days"] == 30
    image = next(row for row in data["by_job_type"] if row["job_type"] == "image")
    assert (image["count"], image["completed"], image["failed"]) == (7, 4, 3)
    assert 30 <= image["run_p50"] <= 35 and image["wait_p95"] is not None
    assert [(row["category"], row["count"]) for row in data["failures_by_category"]] == [
        ("out_of_memory", 2),
        ("node_error", 1),
    ]


def test_report_as_csv_is_one_table(staff_run, history):
    result = staff_run("report", "--since", "1w", "--format", "csv")
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    by_key = {(row["group"], row["name"]): row for row in rows}
    assert by_key[("backend", "gpu2")]["count"] == "3"
    assert by_key[("job_type", "video")]["success_rate"] == "1.0"
    assert by_key[("failure_category", "out_of_memory")]["count"] == "2"
    assert by_key[("overall", "all")]["count"] == "8"
