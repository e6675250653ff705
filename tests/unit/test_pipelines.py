"""Shot pipelines: a job reads another job's output ("output:<job>/<n>"). The request is checked as a
graph, downstream jobs wait `blocked` and are released or failed `dependency_failed` in the upstream's
final transaction (transitively, and by a sweep when that was missed), another user's job is never a
source, and the pipeline's ETA is the longest chain of expected run times."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import pytest
import requests
from django.contrib.auth.models import Permission
from django.core.files.base import ContentFile
from PIL import Image
from rest_framework.test import APIClient

from devtools.simulator_process import InProcessSimulator
from jobs import services
from jobs.critical_path import critical_path
from jobs.models import FailureCategory, Job, JobDependency, JobGroup, JobOutput, JobStatus
from jobs.sweeps import sweep_blocked_jobs
from jobs.tracking import job_track
from tests.factories import UserFactory, api_key_for

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _media(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


def empty_image(width: int = 40, height: int = 24, color: int = 0x11AA33) -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": width, "height": height, "batch_size": 1, "color": color},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "keyframe"}},
    }


def reads(reference: str, prefix: str = "video") -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": reference}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def failing() -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "TestSyncError", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "never"}},
    }


def pipeline_body(*jobs: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "shot 12", "project": "moon", "shot": "012", "job_type": "image", **fields, "jobs": list(jobs)}


def submit(api: APIClient, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post("/api/pipelines/", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def by_key(pipeline: dict[str, Any]) -> dict[str, Job]:
    return {row["key"]: Job.objects.get(pk=row["id"]) for row in pipeline["jobs"]}


def refused(api: APIClient, body: dict[str, Any]) -> str:
    response = api.post("/api/pipelines/", body, format="json")
    assert response.status_code == 400, response.content
    return str(response.json())


def completed_with_outputs(job: Job, count: int) -> None:
    """Run a job to completion through the state machine, with `count` stored outputs."""
    services.job_transition(job, JobStatus.SUBMITTED)
    for n in range(count):
        output = JobOutput(job=job, node_id="2", kind="images", comfy_filename=f"k_{n}.png", media_type="image/png")
        output.file.save(f"k_{n}.png", ContentFile(b"png"), save=True)
    services.job_close(job, JobStatus.COMPLETED)


def chain(api: APIClient) -> dict[str, Job]:
    """keyframe -> video -> upscale, the video and the upscale blocked."""
    return by_key(
        submit(
            api,
            pipeline_body(
                {"key": "keyframe", "workflow": empty_image()},
                {"key": "video", "workflow": reads("output:keyframe/0")},
                {"key": "upscale", "workflow": reads("output:video"), "job_type": "upscale"},
            ),
        )
    )


# --- the request, as a graph ------------------------------------------------------------------


def test_a_pipeline_is_made_with_its_keys_resolved_to_job_ids_and_its_downstream_jobs_blocked(api: APIClient) -> None:
    body = pipeline_body(
        # Given downstream first: the jobs are made in an order where each comes after what it reads.
        {"key": "video", "workflow": reads("output:keyframe/0"), "name": "the video"},
        {"key": "keyframe", "workflow": empty_image()},
        tags=["pipeline-test"],
    )
    pipeline = submit(api, body)
    assert [row["key"] for row in pipeline["jobs"]] == ["keyframe", "video"]
    assert pipeline["jobs"][1]["upstream"] == ["keyframe"]
    jobs = by_key(pipeline)
    assert jobs["keyframe"].status == JobStatus.QUEUED and jobs["video"].status == JobStatus.BLOCKED
    assert jobs["video"].workflow["1"]["inputs"]["image"] == f"output:{jobs['keyframe'].id}/0"
    assert (jobs["video"].name, jobs["keyframe"].name, jobs["video"].shot) == ("the video", "shot 12", "012")
    assert JobDependency.objects.filter(job=jobs["video"], upstream=jobs["keyframe"]).exists()
    assert pipeline["status"] == "queued" and pipeline["progress_percent"] == 0.0

    listed = api.get("/api/pipelines/?project=moon").json()["results"]
    assert [item["id"] for item in listed] == [pipeline["id"]]
    assert api.get("/api/pipelines/?project=sun").json()["results"] == []
    assert api.get("/api/pipelines/?search=shot").json()["results"][0]["id"] == pipeline["id"]
    assert api.get("/api/groups/").json()["results"][0]["kind"] == "pipeline", "a pipeline is a group of its kind"
    shown = api.get(f"/api/jobs/{jobs['video'].id}/").json()
    assert (shown["status"], shown["queue_position"], shown["eta"]) == ("blocked", None, None)


@pytest.mark.parametrize(
    ("jobs", "reason"),
    [
        ([{"key": "a", "workflow": empty_image()}, {"key": "a", "workflow": empty_image()}], "used more than once: a"),
        ([{"key": "a", "workflow": reads("output:nope/0")}], "no job of this pipeline has the key 'nope'"),
        ([{"key": "a", "workflow": reads("output:a/0")}], "cannot read its own output"),
        ([{"key": "a", "workflow": reads("output:b/1")}, {"key": "b", "workflow": reads("output:a")}], "a cycle"),
        ([{"key": "a", "workflow": empty_image()}, {"key": "b", "workflow": reads("output:a/999")}], "at most 200"),
        ([{"key": "a", "workflow": reads("output:a/x")}], "is not an output reference"),
        ([{"key": "1a", "workflow": empty_image()}], "a key is a letter"),
        ([], "1 to 100 jobs"),
    ],
)
def test_a_request_that_is_no_pipeline_is_a_400_that_names_why_and_makes_nothing(
    api: APIClient, jobs: list[dict[str, Any]], reason: str
) -> None:
    assert reason in refused(api, pipeline_body(*jobs))
    assert not Job.objects.exists() and not JobGroup.objects.exists()


def test_a_cycle_is_refused_with_its_keys(api: APIClient) -> None:
    body = pipeline_body(
        {"key": "root", "workflow": empty_image()},
        {"key": "a", "workflow": reads("output:c/0")},
        {"key": "b", "workflow": reads("output:a/0")},
        {"key": "c", "workflow": reads("output:b/0")},
    )
    message = refused(api, body)
    assert "cycle" in message and all(key in message for key in ("a", "b", "c")) and "root" not in message


def test_a_pipeline_has_at_most_pipeline_max_jobs(api: APIClient, settings: Any) -> None:
    settings.PIPELINE_MAX_JOBS = 2
    body = pipeline_body(*({"key": f"k{n}", "workflow": empty_image()} for n in range(3)))
    assert "PIPELINE_MAX_JOBS" in refused(api, body)


# --- propagation -------------------------------------------------------------------------------


def test_the_downstream_job_is_queued_when_its_upstream_completes_and_not_before(api: APIClient) -> None:
    jobs = chain(api)
    services.job_transition(jobs["keyframe"], JobStatus.SUBMITTED)
    services.job_requeue(jobs["keyframe"], FailureCategory.COMFYUI_UNREACHABLE, "gone a moment")  # an automatic retry
    jobs["video"].refresh_from_db()
    assert jobs["video"].status == JobStatus.BLOCKED

    jobs["keyframe"].refresh_from_db()
    completed_with_outputs(jobs["keyframe"], 1)
    for job in jobs.values():
        job.refresh_from_db()
    assert (jobs["video"].status, jobs["upscale"].status) == (JobStatus.QUEUED, JobStatus.BLOCKED)


def test_a_failed_upstream_fails_every_job_downstream_with_the_reason(api: APIClient) -> None:
    jobs = chain(api)
    services.job_transition(jobs["keyframe"], JobStatus.SUBMITTED)
    services.job_fail(jobs["keyframe"], FailureCategory.NODE_ERROR, "KSampler broke")
    for job in jobs.values():
        job.refresh_from_db()
    assert jobs["keyframe"].status == JobStatus.FAILED
    video, upscale = jobs["video"], jobs["upscale"]
    assert (video.status, video.failure_category) == (JobStatus.FAILED, FailureCategory.DEPENDENCY_FAILED)
    assert f"'keyframe' ({jobs['keyframe'].id}) failed (node_error)" in video.error_message
    assert video.error_details["upstream"]["status"] == "failed"
    assert (upscale.status, upscale.failure_category) == (JobStatus.FAILED, FailureCategory.DEPENDENCY_FAILED)
    assert f"'video' ({video.id}) failed (dependency_failed)" in upscale.error_message
    pipeline = api.get(f"/api/pipelines/{jobs['keyframe'].group_id}/").json()
    assert (pipeline["status"], pipeline["progress_percent"], pipeline["eta"]) == ("failed", 100.0, None)


def test_cancelling_an_upstream_job_fails_the_jobs_waiting_for_it(api: APIClient) -> None:
    jobs = chain(api)
    assert api.post(f"/api/jobs/{jobs['keyframe'].id}/cancel/").status_code == 200
    jobs["video"].refresh_from_db()
    assert jobs["video"].failure_category == FailureCategory.DEPENDENCY_FAILED
    assert "was cancelled" in jobs["video"].error_message


def test_cancelling_the_pipeline_cancels_every_job_of_it(api: APIClient) -> None:
    jobs = chain(api)
    group_id = jobs["keyframe"].group_id
    response = api.post(f"/api/pipelines/{group_id}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert set(Job.objects.values_list("status", flat=True)) == {JobStatus.CANCELLED}
    assert api.post(f"/api/pipelines/{group_id}/cancel/").status_code == 409


def test_an_upstream_with_fewer_outputs_than_read_fails_the_downstream_job(api: APIClient) -> None:
    jobs = by_key(
        submit(
            api,
            pipeline_body(
                {"key": "keyframe", "workflow": empty_image()}, {"key": "video", "workflow": reads("output:keyframe/3")}
            ),
        )
    )
    completed_with_outputs(jobs["keyframe"], 1)
    jobs["video"].refresh_from_db()
    assert jobs["video"].failure_category == FailureCategory.DEPENDENCY_FAILED
    assert (
        "completed with 1 output(s)" in jobs["video"].error_message and "reads output 3" in jobs["video"].error_message
    )


def test_a_manual_retry_of_a_failed_upstream_leaves_the_failed_downstream_jobs_failed(api: APIClient) -> None:
    jobs = chain(api)
    services.job_transition(jobs["keyframe"], JobStatus.SUBMITTED)
    services.job_fail(jobs["keyframe"], FailureCategory.NODE_ERROR, "broke")
    retry = api.post(f"/api/jobs/{jobs['keyframe'].id}/retry/").json()
    assert retry["status"] == "queued" and Job.objects.get(pk=retry["id"]).pipeline_key == "keyframe"
    completed_with_outputs(Job.objects.get(pk=retry["id"]), 1)
    jobs["video"].refresh_from_db()
    assert jobs["video"].status == JobStatus.FAILED


def test_the_sweep_settles_a_blocked_job_whose_upstream_ended_unseen(api: APIClient) -> None:
    jobs = chain(api)
    # The upstream ended without its transition settling the downstream (a write behind the state machine).
    Job.objects.filter(pk=jobs["keyframe"].pk).update(status=JobStatus.CANCELLED)
    assert sweep_blocked_jobs() == 1  # the video; the upscale fails with it, in its transition
    assert set(
        Job.objects.filter(pk__in=[jobs["video"].pk, jobs["upscale"].pk]).values_list("failure_category", flat=True)
    ) == {FailureCategory.DEPENDENCY_FAILED}
    assert sweep_blocked_jobs() == 0


def test_the_sweep_releases_a_blocked_job_whose_upstream_completed_unseen(api: APIClient) -> None:
    jobs = chain(api)
    output = JobOutput(job=jobs["keyframe"], node_id="2", kind="images", comfy_filename="k.png", media_type="image/png")
    output.file.save("k.png", ContentFile(b"png"), save=True)
    Job.objects.filter(pk=jobs["keyframe"].pk).update(status=JobStatus.COMPLETED)
    assert sweep_blocked_jobs() == 1
    jobs["video"].refresh_from_db()
    assert jobs["video"].status == JobStatus.QUEUED


# --- a plain job reading an existing job's output ------------------------------------------------


def test_another_users_job_is_no_source_and_says_no_more_than_a_missing_one(api: APIClient) -> None:
    other = UserFactory.create()
    theirs = services.job_create(user=other, workflow=empty_image(), job_type="image")
    completed_with_outputs(theirs, 1)
    answers = []
    for source in (theirs.id, "00000000-0000-0000-0000-000000000000"):
        response = api.post("/api/jobs/", {"workflow": reads(f"output:{source}/0"), "job_type": "image"}, format="json")
        assert response.status_code == 400
        answers.append(str(response.json()["workflow"]).replace(str(source), "<id>"))
    assert answers[0] == answers[1] and "you have no such job" in answers[0]


def test_staff_who_may_view_jobs_may_read_other_users_outputs() -> None:
    other = UserFactory.create()
    theirs = services.job_create(user=other, workflow=empty_image(), job_type="image")
    completed_with_outputs(theirs, 1)
    staff = UserFactory.create(is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_job"))
    api = APIClient()
    api.credentials(HTTP_X_API_KEY=api_key_for(staff))
    response = api.post("/api/jobs/", {"workflow": reads(f"output:{theirs.id}/0"), "job_type": "image"}, format="json")
    assert response.status_code == 201 and response.json()["status"] == "queued"


def test_a_plain_job_waits_for_a_running_source_and_is_refused_an_ended_one_that_cannot_serve(
    api: APIClient, user: Any
) -> None:
    running = services.job_create(user=user, workflow=empty_image(), job_type="image")
    services.job_transition(running, JobStatus.SUBMITTED)
    response = api.post("/api/jobs/", {"workflow": reads(f"output:{running.id}/0"), "job_type": "image"}, format="json")
    assert response.status_code == 201 and response.json()["status"] == "blocked"

    done = services.job_create(user=user, workflow=empty_image(), job_type="image")
    completed_with_outputs(done, 1)
    response = api.post("/api/jobs/", {"workflow": reads(f"output:{done.id}/1"), "job_type": "image"}, format="json")
    assert response.status_code == 400 and "completed with 1 output(s)" in str(response.json())

    failed = services.job_create(user=user, workflow=empty_image(), job_type="image")
    services.job_cancel(failed)
    response = api.post("/api/jobs/", {"workflow": reads(f"output:{failed.id}"), "job_type": "image"}, format="json")
    assert response.status_code == 400 and "is cancelled" in str(response.json())


# --- the ETA ---------------------------------------------------------------------------------------


def test_the_critical_path_is_the_slowest_chain_of_remaining_run_times() -> None:
    # A diamond: a (10 s) feeds b (5 s) and c (20 s), which both feed d (3 s): 10 + 20 + 3.
    upstream = {"b": ["a"], "c": ["a"], "d": ["b", "c"]}
    path = critical_path({"a": 10.0, "b": 5.0, "c": 20.0, "d": 3.0}, upstream)
    assert path is not None and (path.seconds, path.unknown_jobs) == (33.0, 0)
    # Nothing known of c: it counts as 0 and is reported.
    path = critical_path({"a": 10.0, "b": 5.0, "c": None, "d": 3.0}, upstream)
    assert path is not None and (path.seconds, path.unknown_jobs) == (18.0, 1)
    # a ended: the rest from now.
    path = critical_path({"a": 0.0, "b": 5.0, "c": 20.0, "d": 3.0}, upstream)
    assert path is not None and path.seconds == 23.0
    assert critical_path({"a": 0.0, "d": 0.0}, upstream) is None
    assert critical_path({"a": None, "b": None}, upstream) is None


# --- end to end, the real tracker against the simulator ---------------------------------------------


def sim_get(sim: InProcessSimulator, path: str, **params: str) -> Any:
    return requests.get(f"{sim.url}{path}", params=params, timeout=5).json()


def test_the_downstream_loadimage_reads_the_upstream_output_in_comfyui(
    api: APIClient, settings: Any, comfyui_sim: InProcessSimulator
) -> None:
    settings.COMFYUI_BACKENDS = {"default": comfyui_sim.url}
    jobs = by_key(
        submit(
            api,
            pipeline_body(
                {"key": "keyframe", "workflow": empty_image(40, 24, 0x11AA33)},
                {"key": "video", "workflow": reads("output:keyframe/0")},
            ),
        )
    )
    job_track(str(jobs["keyframe"].id))
    jobs["video"].refresh_from_db()
    assert jobs["video"].status == JobStatus.QUEUED
    job_track(str(jobs["video"].id))
    jobs["video"].refresh_from_db()
    assert jobs["video"].status == JobStatus.COMPLETED, jobs["video"].error_message

    (upstream_output,) = jobs["keyframe"].outputs.all()
    sent = hashlib.sha256(upstream_output.file.read()).hexdigest()
    (read,) = sim_get(comfyui_sim, "/sim/input_reads", prompt_id=str(jobs["video"].prompt_id))
    assert read["sha256"] == sent and read["image"] == f"anime_production/{jobs['video'].id}/{jobs['video'].id}-0.png"
    (output,) = jobs["video"].outputs.all()
    image = Image.open(io.BytesIO(output.file.read()))
    assert image.size == (40, 24) and image.getpixel((0, 0)) == (0x11, 0xAA, 0x33)
    pipeline = api.get(f"/api/pipelines/{jobs['video'].group_id}/").json()
    assert (pipeline["status"], pipeline["progress_percent"]) == ("completed", 100.0)


def test_an_upstream_failing_in_comfyui_makes_the_downstream_dependency_failed(
    api: APIClient, settings: Any, comfyui_sim: InProcessSimulator
) -> None:
    settings.COMFYUI_BACKENDS = {"default": comfyui_sim.url}
    jobs = by_key(
        submit(
            api,
            pipeline_body(
                {"key": "keyframe", "workflow": failing()}, {"key": "video", "workflow": reads("output:keyframe/0")}
            ),
        )
    )
    job_track(str(jobs["keyframe"].id))
    for job in jobs.values():
        job.refresh_from_db()
    assert jobs["keyframe"].status == JobStatus.FAILED
    assert (jobs["video"].status, jobs["video"].failure_category) == ("failed", FailureCategory.DEPENDENCY_FAILED)


# --- the schema ------------------------------------------------------------------------------------


def test_the_pipeline_endpoints_are_in_the_schema_and_their_answers_match_it(api: APIClient) -> None:
    from drf_spectacular.generators import SchemaGenerator

    from tests.unit.test_api_schema import assert_matches

    schema = SchemaGenerator().get_schema(request=None, public=True)
    paths = schema["paths"]
    assert {"400", "401", "429"} <= set(paths["/api/pipelines/"]["post"]["responses"])
    assert {"200", "202", "403", "404", "409"} <= set(paths["/api/pipelines/{id}/cancel/"]["post"]["responses"])
    assert "get" in paths["/api/pipelines/"] and "get" in paths["/api/pipelines/{id}/"]
    jobs = chain(api)
    group_id = jobs["keyframe"].group_id
    assert_matches(schema, "PipelineDetail", api.get(f"/api/pipelines/{group_id}/").json())
    assert_matches(schema, "PaginatedPipelineList", api.get("/api/pipelines/").json())
    assert_matches(schema, "ValidationErrors", api.post("/api/pipelines/", pipeline_body(), format="json").json())
    assert_matches(schema, "PipelineDetail", api.post(f"/api/pipelines/{group_id}/cancel/").json())
    assert_matches(schema, "Detail", api.post(f"/api/pipelines/{group_id}/cancel/").json())
    assert_matches(schema, "Job", api.get(f"/api/jobs/{jobs['video'].id}/").json())
