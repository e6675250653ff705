"""Running a workflow template: one job from `inputs`, a group of jobs from `batch`. Every input is
checked by its kind and bounds with a 400 naming it; the job stores the filled workflow and the
template's name and version, so a later version changes nothing already submitted."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from assets.models import AssetUse
from jobs.models import Job, JobGroup
from tests.factories import UserFactory
from tests.media_files import asset_of, png, wav
from tests.template_workflows import KEYFRAME_WORKFLOW, publish, publisher_user
from workflow_templates.inputs import TemplateInput, filled_workflow

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
    return publish(staff)


@pytest.fixture
def keyframe(user: Any) -> str:
    return str(asset_of(user, png(16, 12), "kf.png").id)


def run(api: APIClient, body: dict[str, Any], name: str = "keyframe") -> Any:
    return api.post(f"/api/templates/{name}/jobs/", body, format="json")


def refused(api: APIClient, body: dict[str, Any]) -> Any:
    response = run(api, body)
    assert response.status_code == 400, response.content
    assert not Job.objects.exists() and not JobGroup.objects.exists(), "nothing is made from a refused run"
    return response.json()


def test_a_run_makes_one_job_with_the_filled_workflow_named_after_the_template(
    api: APIClient, template: dict[str, Any], keyframe: str
) -> None:
    response = run(api, {"inputs": {"keyframe": keyframe, "seed": 1234, "prompt": "a cat"}, "priority": 7})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["template"] == {"name": "keyframe", "version": 1} and body["name"] == "keyframe"
    assert body["priority"] == 7 and body["group"] is None
    assert body["websocket_url"].endswith(f"/ws/jobs/{body['id']}/")
    job = Job.objects.get(pk=body["id"])
    assert (job.template_name, job.template_version) == ("keyframe", 1)
    assert job.workflow["7"]["inputs"]["image"] == f"asset:{keyframe}"
    assert job.workflow["5"]["inputs"]["seed"] == 1234 and job.workflow["2"]["inputs"]["text"] == "a cat"
    assert job.workflow["5"]["inputs"]["steps"] == 4, "an input not given takes its default"
    (use,) = AssetUse.objects.filter(job_id=job.id)
    assert (str(use.asset_id), use.node_id, use.input_name) == (keyframe, "7", "image"), "the keyframe is in use"


def test_an_asset_given_as_its_reference_is_the_same_asset(api: APIClient, template: Any, keyframe: str) -> None:
    response = run(api, {"inputs": {"keyframe": f"asset:{keyframe}"}})
    assert response.status_code == 201, response.content
    assert Job.objects.get().workflow["7"]["inputs"]["image"] == f"asset:{keyframe}"


@pytest.mark.parametrize(
    "inputs,name,reason",
    [
        ({}, "keyframe", "required (the id of one of your image assets)"),
        (
            {"colour": 3},
            "colour",
            "unknown input; this template's inputs are: keyframe, prompt, seed, steps, cfg, sampler",
        ),
        ({"seed": -1}, "seed", "must be at least 0 (got -1)"),
        ({"seed": 2**32}, "seed", "must be at most 4294967295"),
        ({"seed": "12"}, "seed", "must be a whole number"),
        ({"seed": True}, "seed", "must be a whole number"),
        ({"steps": 2.5}, "steps", "must be a whole number"),
        ({"cfg": 0.5}, "cfg", "must be at least 1.0"),
        ({"cfg": "7"}, "cfg", "must be a finite number"),
        ({"prompt": "x" * 201}, "prompt", "at most 200 characters (got 201)"),
        ({"prompt": 5}, "prompt", "must be text"),
        ({"prompt": "asset:x"}, "prompt", "may not start with"),
        ({"sampler": "ddim"}, "sampler", "must be one of euler, dpmpp_2m"),
        ({"keyframe": "kf.png"}, "keyframe", "must be the id of one of your image assets"),
    ],
)
def test_a_bad_input_is_a_400_naming_it(
    api: APIClient, template: Any, keyframe: str, inputs: dict[str, Any], name: str, reason: str
) -> None:
    given = {"keyframe": keyframe, **inputs} if name != "keyframe" else inputs
    errors = refused(api, {"inputs": given})
    assert reason in " ".join(errors["inputs"][name]), errors


def test_someone_elses_asset_or_one_of_the_wrong_kind_is_refused(api: APIClient, user: Any, template: Any) -> None:
    theirs = asset_of(UserFactory.create(), png(4, 4))
    errors = refused(api, {"inputs": {"keyframe": str(theirs.id)}})
    assert errors["inputs"]["keyframe"] == [f"you have no asset {theirs.id}"]
    missing = uuid.uuid4()
    assert refused(api, {"inputs": {"keyframe": str(missing)}})["inputs"]["keyframe"] == [
        f"you have no asset {missing}"
    ]
    sound = asset_of(user, wav(0.5), "a.wav")
    errors = refused(api, {"inputs": {"keyframe": str(sound.id)}})
    assert "is an audio; this input takes an image" in errors["inputs"]["keyframe"][0], errors


def test_inputs_that_are_not_an_object_are_refused(api: APIClient, template: Any) -> None:
    assert refused(api, {"inputs": ["seed", 1]})["inputs"] == ["must be an object mapping input names to values"]


def test_a_version_is_run_by_number_and_a_new_version_changes_no_submitted_job(
    api: APIClient, staff: APIClient, template: Any, keyframe: str
) -> None:
    first = run(api, {"inputs": {"keyframe": keyframe}}).json()
    changed = {k: dict(v) for k, v in KEYFRAME_WORKFLOW.items()}
    changed["5"] = {**changed["5"], "inputs": {**changed["5"]["inputs"], "scheduler": "karras"}}
    publish(staff, workflow=changed)
    second = run(api, {"inputs": {"keyframe": keyframe}}).json()
    pinned = run(api, {"inputs": {"keyframe": keyframe}, "version": 1}).json()
    assert (first["template"]["version"], second["template"]["version"], pinned["template"]["version"]) == (1, 2, 1)
    assert Job.objects.get(pk=first["id"]).workflow["5"]["inputs"]["scheduler"] == "normal"
    assert Job.objects.get(pk=second["id"]).workflow["5"]["inputs"]["scheduler"] == "karras"
    assert Job.objects.get(pk=pinned["id"]).workflow["5"]["inputs"]["scheduler"] == "normal"
    unknown = run(api, {"inputs": {"keyframe": keyframe}, "version": 3})
    assert (unknown.status_code, unknown.json()) == (400, {"version": ["keyframe has versions 1 to 2"]})
    too_big = run(api, {"inputs": {"keyframe": keyframe}, "version": 10**30})
    assert too_big.status_code == 400 and "version" in too_big.json()
    listed = api.get("/api/jobs/?template=keyframe&template_version=1").json()["results"]
    assert {job["id"] for job in listed} == {first["id"], pinned["id"]}


def test_a_batch_makes_one_group_of_jobs_with_shared_and_own_inputs_and_labels(
    api: APIClient, template: Any, keyframe: str, django_capture_on_commit_callbacks: Any
) -> None:
    body = {
        "inputs": {"keyframe": keyframe, "prompt": "a fox"},
        "batch": [
            {"inputs": {"seed": 1}},
            {"inputs": {"seed": 2}, "shot": "sh020"},
            {"inputs": {"seed": 3}, "name": "take 3", "tags": ["best"]},
        ],
        "name": "fox sweep",
        "project": "ep01",
        "shot": "sh010",
        "tags": ["sweep"],
        "priority": 6,
    }
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = run(api, body)
    assert response.status_code == 201, response.content
    group = response.json()
    assert (group["name"], group["project"], group["shot"], group["tags"]) == ("fox sweep", "ep01", "sh010", ["sweep"])
    assert group["template"] == {"name": "keyframe", "version": 1}
    assert (group["status"], group["jobs_total"], group["counts"], group["progress_percent"]) == (
        "queued",
        3,
        {"queued": 3},
        0.0,
    )
    jobs = [Job.objects.get(pk=item["id"]) for item in group["jobs"]]
    assert [job.workflow["5"]["inputs"]["seed"] for job in jobs] == [1, 2, 3]
    assert {job.workflow["2"]["inputs"]["text"] for job in jobs} == {"a fox"}
    assert [job.name for job in jobs] == ["fox sweep #1", "fox sweep #2", "take 3"]
    assert [job.shot for job in jobs] == ["sh010", "sh020", "sh010"]
    assert [job.tags for job in jobs] == [["sweep"], ["sweep"], ["sweep", "best"]]
    assert {(job.project, job.priority, job.template_version, job.group_id) for job in jobs} == {
        ("ep01", 6, 1, uuid.UUID(group["id"]))
    }
    wakes = [c for c in callbacks if "_send_on_commit" in c.__qualname__]
    queue_moves = [c for c in callbacks if "queue_announce_soon" in c.__qualname__]
    assert len(wakes) == 1 and len(queue_moves) == 1, "the idle backend woken once, the queue announced once"


def test_a_bad_batch_item_is_a_400_naming_the_item_and_the_input(api: APIClient, template: Any, keyframe: str) -> None:
    errors = refused(
        api, {"inputs": {"keyframe": keyframe}, "batch": [{"inputs": {"seed": 1}}, {"inputs": {"seed": -5}}]}
    )
    assert errors["batch"][0] == {} and errors["batch"][1] == {"inputs": {"seed": ["must be at least 0 (got -5)"]}}


def test_a_batch_is_bounded_by_template_batch_max(api: APIClient, template: Any, keyframe: str, settings: Any) -> None:
    settings.TEMPLATE_BATCH_MAX = 3
    items = [{"inputs": {"seed": n}} for n in range(4)]
    errors = refused(api, {"inputs": {"keyframe": keyframe}, "batch": items})
    assert errors["batch"] == ["a batch has 1 to 3 items (TEMPLATE_BATCH_MAX), not 4"]
    assert "a batch has 1 to 3 items" in refused(api, {"inputs": {"keyframe": keyframe}, "batch": []})["batch"][0]
    assert run(api, {"inputs": {"keyframe": keyframe}, "batch": items[:3]}).status_code == 201


def test_tags_are_bounded_in_count_and_length(api: APIClient, template: Any, keyframe: str, settings: Any) -> None:
    settings.JOB_MAX_TAGS = 2
    assert "at most 2 tags" in refused(api, {"inputs": {"keyframe": keyframe}, "tags": ["a", "b", "c"]})["tags"][0]
    assert (
        "no more than 64 characters"
        in refused(api, {"inputs": {"keyframe": keyframe}, "tags": ["x" * 65]})["tags"]["0"][0]
    )
    batch = {"inputs": {"keyframe": keyframe}, "tags": ["a", "b"], "batch": [{"tags": ["c"]}]}
    assert refused(api, batch)["batch"][0] == {"tags": ["with the batch's tags, at most 2, not 3"]}
    assert "control characters" in refused(api, {"inputs": {"keyframe": keyframe}, "shot": "sh\n010"})["shot"][0]


def test_a_filled_workflow_past_the_servers_bounds_is_refused(staff: APIClient, api: APIClient, keyframe: str) -> None:
    inputs = {
        "keyframe": {"kind": "image", "targets": [["7", "image"]]},
        "width": {"kind": "int", "targets": [["4", "width"]], "min": 8, "default": 64},
        "height": {"kind": "int", "targets": [["4", "height"]], "min": 8, "default": 48},
    }
    publish(staff, name="sizes", inputs=inputs)
    response = run(api, {"inputs": {"keyframe": keyframe, "width": 100000, "height": 100000}}, name="sizes")
    assert response.status_code == 400
    assert "pixels" in " ".join(response.json()["workflow"])


def test_staff_only_templates_cannot_be_run_by_others(staff: APIClient, api: APIClient, keyframe: str) -> None:
    publish(staff, name="internal", staff_only=True)
    assert run(api, {"inputs": {"keyframe": keyframe}}, name="internal").status_code == 404


def test_runs_count_against_the_submit_rate(api: APIClient, template: Any, keyframe: str, throttle_rates: Any) -> None:
    throttle_rates(anon="100/min", user="100/min", submit="2/min")
    codes = [run(api, {"inputs": {"keyframe": keyframe}}).status_code for _ in range(3)]
    assert codes == [201, 201, 429]
    assert api.get("/api/templates/keyframe/").status_code == 200, "reading a template is no submit"


def test_filling_sets_every_target_of_an_input_and_copies_the_workflow() -> None:
    spec = TemplateInput(name="seed", kind="int", targets=(("5", "seed"), ("5", "steps")))
    filled = filled_workflow(KEYFRAME_WORKFLOW, [spec], {"seed": 9})
    assert (filled["5"]["inputs"]["seed"], filled["5"]["inputs"]["steps"]) == (9, 9)
    assert KEYFRAME_WORKFLOW["5"]["inputs"]["seed"] == 0
