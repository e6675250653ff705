"""`anime-jobs template list | show | run` in this process, against the real template API through
Django's test client: values typed by the template's inputs, files uploaded as assets first, the
server's refusals as one line with their exit code, and --watch following the job it made."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
from rest_framework.test import APIClient

from anime_client.cli import ExitCode
from anime_client.templates import Template, TemplateInput, typed_value
from devtools.processes import free_port
from jobs.models import Job
from jobs.services import job_cancel
from tests.factories import api_key_for
from tests.media_files import png
from tests.template_workflows import KEYFRAME_INPUTS, publish, publisher_user
from tests.unit.test_client_cli import Cli, one_error_line

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _media(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def staff() -> APIClient:
    client = APIClient()
    client.force_authenticate(publisher_user())
    return client


@pytest.fixture
def template(staff: APIClient) -> dict[str, Any]:
    return publish(staff, description="a keyframe, sampled again")


@pytest.fixture
def run(user: Any) -> Cli:
    return Cli(api_key_for(user))


@pytest.fixture
def keyframe(tmp_path: Path) -> Path:
    path = tmp_path / "shot12.png"
    path.write_bytes(png(16, 12))
    return path


def test_a_run_sends_typed_values_uploads_the_file_and_prints_the_job_id(run, template, keyframe, user):
    result = run(
        "template", "run", "keyframe",
        "--set", "prompt=a fox in the snow, at dusk",
        "--set", "seed=42",
        "--set", "cfg=7.5",
        "--set", "sampler=dpmpp_2m",
        "--input", f"keyframe={keyframe}",
        "--project", "ep01", "--shot", "sh012", "--tag", "sweep", "--tag", "dusk", "--name", "fox",
        "--priority", "7",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    job = Job.objects.get()
    assert result.stdout.strip() == str(job.id)
    assert run.sent == ["GET /api/templates/keyframe/", "POST /api/assets/", "POST /api/templates/keyframe/jobs/"]
    sent = json.loads(run.adapter.sent[-1].body or b"")
    assert sent["inputs"]["seed"] == 42 and sent["inputs"]["cfg"] == 7.5, "numbers go as JSON numbers"
    assert job.workflow["2"]["inputs"]["text"] == "a fox in the snow, at dusk"
    assert (job.workflow["5"]["inputs"]["seed"], job.workflow["5"]["inputs"]["sampler_name"]) == (42, "dpmpp_2m")
    assert job.workflow["7"]["inputs"]["image"].startswith("asset:")
    assert (job.template_name, job.template_version, job.priority, job.user) == ("keyframe", 1, 7, user)
    assert (job.name, job.project, job.shot, list(job.tags)) == ("fox", "ep01", "sh012", ["sweep", "dusk"])
    assert f"{keyframe}: uploaded as asset {job.workflow['7']['inputs']['image'][6:]}" in result.stderr
    assert f"job {job.id} queued (priority 7" in result.stderr


def test_an_earlier_version_is_run_with_its_own_inputs(run, staff, template, keyframe):
    publish(staff, inputs={"keyframe": KEYFRAME_INPUTS["keyframe"]})  # version 2 has no seed input
    result = run("template", "run", "keyframe", "--version", "1", "--set", "seed=9", "--input", f"keyframe={keyframe}")
    assert result.exit_code == 0, result.stderr
    job = Job.objects.get()
    assert job.template_version == 1 and job.workflow["5"]["inputs"]["seed"] == 9
    assert run.sent[0] == "GET /api/templates/keyframe/versions/1/"

    latest = run("template", "run", "keyframe", "--set", "seed=9", "--input", f"keyframe={keyframe}")
    assert latest.exit_code == ExitCode.REFUSED
    assert "inputs.seed: unknown input; this template's inputs are: keyframe" in one_error_line(latest)


@pytest.mark.parametrize(
    "flags,expected",
    [
        (["--set", "seed=abc"], "inputs.seed: must be a whole number from"),
        (["--set", "seed=4294967296"], "inputs.seed: must be at most 4294967295 (got 4294967296)"),
        (["--set", "cfg=nan"], "inputs.cfg: must be a finite number, not 'nan'"),
        (["--set", "sampler=ddim"], "inputs.sampler: must be one of euler, dpmpp_2m; not 'ddim'"),
        (["--set", "colour=red"], "inputs.colour: unknown input; this template's inputs are: keyframe, prompt"),
        (["--set", "steps=0", "--set", "cfg=99"], "inputs.steps: must be at least 1 (got 0); inputs.cfg: must be"),
    ],
)
def test_values_the_server_refuses_are_one_line_with_its_reasons_and_exit_4(run, template, keyframe, flags, expected):
    result = run("template", "run", "keyframe", "--input", f"keyframe={keyframe}", *flags)
    assert result.exit_code == ExitCode.REFUSED
    line = one_error_line(result)
    assert line.startswith("anime-jobs: run template keyframe: the server refused the request (400): ")
    assert expected in line and len(result.stderr.strip().splitlines()) == 2  # the upload's note, then the refusal
    assert not Job.objects.exists()


def test_a_missing_required_file_input_is_the_servers_400(run, template):
    result = run("template", "run", "keyframe")
    assert result.exit_code == ExitCode.REFUSED
    assert "inputs.keyframe: required (the id of one of your image assets)" in one_error_line(result)


@pytest.mark.parametrize(
    "flags,expected",
    [
        (["--input", "keyfrane=FILE"], "keyframe v1 has no input 'keyfrane'; its file inputs: keyframe (image)"),
        (["--input", "seed=FILE"], "'seed' is a int input, not a file (--set seed=VALUE)"),
        (["--input", "keyframe=absent.png"], "--input keyframe=absent.png: no such file"),
        (["--set", "seed=1", "--set", "seed=2"], "--set seed is given twice"),
        (["--set", "seed=1", "--input", "seed=FILE"], "input 'seed' is given twice"),
        (["--set", "seed"], "--set 'seed': expected INPUT=VALUE"),
        (["--input", "shot12.png"], "--input 'shot12.png': expected INPUT=FILE, e.g. keyframe=shot12.png"),
    ],
)
def test_a_bad_flag_is_a_usage_error_before_any_upload(run, template, keyframe, flags, expected):
    flags = [flag.replace("FILE", str(keyframe)) for flag in flags]
    result = run("template", "run", "keyframe", *flags)
    assert result.exit_code == ExitCode.USAGE
    assert expected in one_error_line(result)
    assert run.sent in ([], ["GET /api/templates/keyframe/"]), "nothing uploaded, nothing run"


def test_an_unknown_template_and_an_unknown_version_are_404s(run, template):
    result = run("template", "run", "keyfrane", "--set", "seed=1")
    assert result.exit_code == ExitCode.REFUSED
    assert one_error_line(result).startswith("anime-jobs: template keyfrane: not found (404)")
    result = run("template", "show", "keyframe", "--version", "7")
    assert result.exit_code == ExitCode.REFUSED
    assert one_error_line(result).startswith("anime-jobs: template keyframe v7: not found (404)")


def test_a_staff_only_template_is_not_found_for_an_artist(run, staff):
    publish(staff, name="lighting", staff_only=True)
    assert run("template", "run", "lighting").exit_code == ExitCode.REFUSED
    assert "lighting" not in run("template", "list").stdout


def test_server_down_and_a_bad_key_are_one_line_each(run, template):
    port = free_port()
    result = run("template", "run", "keyframe", "--set", "seed=1", url=f"http://127.0.0.1:{port}")
    assert result.exit_code == ExitCode.UNREACHABLE
    assert result.stderr.strip() == (
        f"anime-jobs: template keyframe: cannot reach the server at http://127.0.0.1:{port}/ (Connection refused)"
    )
    result = run("template", "list", key="not-a-key")
    assert result.exit_code == ExitCode.NOT_ALLOWED
    assert one_error_line(result).startswith("anime-jobs: list templates: the server refused the API key (401)")


def test_watch_follows_the_job_it_made_to_its_end(run, template, keyframe, monkeypatch):
    """The job is cancelled on the server while the command follows it: the same ending as
    `submit --watch` (exit 3 and the closing line)."""
    send = run.adapter.send

    def cancel_on_first_look(request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        job = Job.objects.first()
        if request.method == "GET" and job is not None and job.status == "queued":
            job_cancel(job)
        return send(request, **kwargs)

    monkeypatch.setattr(run.adapter, "send", cancel_on_first_look)
    result = run("template", "run", "keyframe", "--input", f"keyframe={keyframe}", "--watch")
    job = Job.objects.get()
    assert result.exit_code == ExitCode.JOB_CANCELLED, result.stderr
    assert result.stdout.strip() == str(job.id)
    assert one_error_line(result) == f"anime-jobs: job {job.id} was cancelled"
    assert f"GET /api/jobs/{job.id}/" in run.sent


def test_list_and_show_describe_the_inputs(run, template, staff):
    publish(staff, name="sleeper", description="keeps a GPU busy")
    listed = run("template", "list")
    assert listed.exit_code == 0, listed.stderr
    assert "keyframe" in listed.stdout and "sleeper" in listed.stdout and "keeps a GPU busy" in listed.stdout

    shown = run("template", "show", "keyframe")
    assert shown.exit_code == 0, shown.stderr
    rows = {line.split("│")[1].strip(): line for line in shown.stdout.splitlines() if line.count("│") > 4}
    assert "required" in rows["keyframe"] and "a file (--input keyframe=FILE)" in rows["keyframe"]
    assert "0 to 4294967295" in rows["seed"] and "│ 0 " in rows["seed"]
    assert "1.0 to 20.0" in rows["cfg"] and "euler, dpmpp_2m" in rows["sampler"]
    assert "at most 200 characters" in rows["prompt"]
    assert "a keyframe, sampled again" in shown.stdout


def test_no_templates_is_a_note_not_an_error(run):
    result = run("template", "list")
    assert result.exit_code == 0 and "no templates to run" in result.stderr


@pytest.mark.parametrize(
    "kind,text,value",
    [
        ("int", "42", 42),
        ("int", "18446744073709551615", 2**64 - 1),
        ("int", "4.0", "4.0"),  # sent as text: the server says what a whole number is
        ("float", "7", 7.0),
        ("float", "inf", "inf"),
        ("bool", "Yes", True),
        ("bool", "off", False),
        ("bool", "maybe", "maybe"),
        ("text", "42", "42"),
        ("choice", "euler", "euler"),
        ("image", "asset:3f9c", "asset:3f9c"),
    ],
)
def test_set_values_take_the_json_type_of_their_kind(kind, text, value):
    spec = TemplateInput.from_api({"name": "x", "kind": kind, "targets": [["1", "x"]], "required": True})
    assert typed_value(spec, text) == value and type(typed_value(spec, text)) is type(value)


def test_the_library_runs_a_template_with_a_file_as_a_pipeline_script_would(run, template, keyframe, user):
    client = run.factory("http://testserver", run.key)
    found = client.template("keyframe")
    file_input = found.input("keyframe")
    assert isinstance(found, Template) and found.input("seed") is not None
    assert file_input is not None and file_input.is_asset
    state = client.run_template("keyframe", {"seed": 3}, files={"keyframe": keyframe}, shot="sh012")
    job = Job.objects.get(pk=state.id)
    assert state.status == "queued" and job.shot == "sh012" and job.workflow["5"]["inputs"]["seed"] == 3
    assert job.user == user and job.workflow["7"]["inputs"]["image"].startswith("asset:")
