"""Late routing: a waiting job is bound to no backend; a free backend takes the best waiting job it
can run (priority, fair share, age), skipping what it lacks, draining and unreachable backends,
and users at their running limit."""

from __future__ import annotations

from contextlib import ExitStack
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from fleet import catalog
from fleet.backends import backend_set_draining
from fleet.catalog import backend_catalog_store, backend_facts_as_read, backend_reachable_record
from fleet.models import Backend
from jobs import dispatch, services, wake
from jobs.facts_served import FRESH_SECONDS
from jobs.models import Job, JobStatus
from jobs.refresh_ahead import refreshes_wait
from jobs.wake import backends_wake, wake_mark, wake_spent
from tests.factories import SLEEP_WORKFLOW, UserFactory, api_key_for

pytestmark = pytest.mark.django_db

# What the simulator's SLEEP_WORKFLOW uses, plus a checkpoint loader whose file a backend may lack.
OBJECT_INFO = {
    "EmptyImage": {"input": {"required": {"width": ["INT", {}]}}},
    "TestSleep": {"input": {"required": {"seconds": ["FLOAT", {}]}}},
    "SaveImage": {"input": {"required": {"filename_prefix": ["STRING", {}]}}, "output_node": True},
    "CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": [["sd15.safetensors", "xl/base.safetensors"], {}]}}},
}
CHECKPOINT_WORKFLOW = {
    **SLEEP_WORKFLOW,
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "xl/base.safetensors"}},
}


@pytest.fixture
def two_backends(settings: Any) -> None:
    settings.COMFYUI_BACKENDS = {"gpu-a": "http://127.0.0.1:9", "gpu-b": "http://127.0.0.1:9"}
    settings.COMFYUI_DEFAULT_BACKEND = "gpu-a"
    settings.COMFYUI_BACKEND_LABELS = {"gpu-b": ["video", "vram:48g"]}


def submit(user: Any = None, *, priority: int = 5, workflow: dict | None = None, **options: Any) -> Job:
    return services.job_create(
        user=user or UserFactory.create(),
        workflow=workflow or {k: dict(v) for k, v in SLEEP_WORKFLOW.items()},
        job_type="image",
        priority=priority,
        **options,
    )


def take_and_finish(backend: str) -> Job | None:
    """The backend takes its next job, which then completes (so the backend is free again)."""
    job = dispatch.job_take_next(backend)
    if job is not None:
        services.job_close(job, JobStatus.COMPLETED)
    return job


def test_a_waiting_job_is_bound_to_no_backend_until_one_takes_it(two_backends):
    job = submit()
    assert job.backend == "" and job.status == JobStatus.QUEUED
    assert job.waiting_for == "a free backend"
    taken = dispatch.job_take_next("gpu-b")
    assert taken is not None and taken.pk == job.pk
    job.refresh_from_db()
    assert (job.status, job.backend, job.client_id) == (JobStatus.SUBMITTED, "gpu-b", f"tracker-{job.id}")
    assert job.waiting_for == ""


def test_order_is_priority_then_fair_share_then_age(two_backends):
    alice, bob = UserFactory.create(), UserFactory.create()
    alices = [submit(alice) for _ in range(4)]
    bobs = submit(bob)  # submitted after all of Alice's: waits for one of hers, not four
    urgent = submit(bob, priority=9)
    taken = [take_and_finish("gpu-a") for _ in range(7)]
    assert [job.pk for job in taken if job] == [urgent.pk, alices[0].pk, bobs.pk, *(job.pk for job in alices[1:])]
    assert taken[-1] is None, "nothing left"


def test_a_user_flooding_the_queue_holds_another_back_for_one_job_only(two_backends):
    alice, bob = UserFactory.create(), UserFactory.create()
    for _ in range(20):
        submit(alice)
    for _ in range(5):
        take_and_finish("gpu-a")  # the front moves on
    late = submit(bob)
    first, second = take_and_finish("gpu-a"), take_and_finish("gpu-a")
    assert first is not None and first.user_id == alice.pk, "the turn already begun goes on"
    assert second is not None and second.pk == late.pk


def test_fair_share_by_project(two_backends, settings):
    settings.FAIR_SHARE_BY = "project"
    from jobs.labels import JobLabels

    alice, bob = UserFactory.create(), UserFactory.create()
    first = [submit(alice, labels=JobLabels(project="film")) for _ in range(3)]
    other_user_same_project = submit(bob, labels=JobLabels(project="film"))
    other_project = submit(bob, labels=JobLabels(project="ads"))
    order = [take_and_finish("gpu-a").pk for _ in range(5)]  # type: ignore[union-attr]
    assert order == [first[0].pk, other_project.pk, first[1].pk, first[2].pk, other_user_same_project.pk]


def test_one_job_at_a_time_per_backend_even_with_two_workers_for_it(two_backends):
    submit(), submit()
    assert dispatch.job_take_next("gpu-a") is not None
    assert dispatch.job_take_next("gpu-a") is None, "a second worker of gpu-a finds it busy"
    assert dispatch.job_take_next("gpu-b") is not None, "the other backend takes the next"
    assert Job.objects.filter(status=JobStatus.SUBMITTED).values("backend").distinct().count() == 2


def test_a_requested_backend_and_required_labels_are_kept(two_backends):
    pinned = submit(backend="gpu-a")
    video = submit(requires=["video"])
    assert video.waiting_for == "a free backend with label video"
    assert dispatch.job_take_next("gpu-b").pk == video.pk  # type: ignore[union-attr]
    services.job_close(Job.objects.get(pk=video.pk), JobStatus.COMPLETED)
    assert dispatch.job_take_next("gpu-b") is None, "gpu-b may not run the job pinned to gpu-a"
    assert dispatch.job_take_next("gpu-a").pk == pinned.pk  # type: ignore[union-attr]


def test_draining_and_unreachable_backends_take_nothing(two_backends):
    job = submit()
    backend_set_draining("gpu-a", True)
    backend_reachable_record("gpu-b", False)
    assert dispatch.job_take_next("gpu-a") is None
    assert dispatch.job_take_next("gpu-b") is None
    backend_reachable_record("gpu-b", True)
    assert dispatch.job_take_next("gpu-b").pk == job.pk  # type: ignore[union-attr]


def test_a_backend_skips_jobs_it_lacks_the_nodes_or_models_for(two_backends):
    without_loader = {name: spec for name, spec in OBJECT_INFO.items() if name != "CheckpointLoaderSimple"}
    backend_catalog_store("gpu-a", without_loader)
    backend_catalog_store("gpu-b", OBJECT_INFO)
    needs_checkpoint = submit(workflow=CHECKPOINT_WORKFLOW)
    plain = submit()
    assert dispatch.job_take_next("gpu-a").pk == plain.pk  # type: ignore[union-attr]
    assert dispatch.job_take_next("gpu-b").pk == needs_checkpoint.pk  # type: ignore[union-attr]


def test_users_at_their_running_limit_are_skipped(two_backends):
    alice, bob = UserFactory.create(), UserFactory.create()
    submit(alice)
    bobs = submit(bob)
    with mock.patch.object(dispatch, "users_held", return_value={alice.pk}):
        assert dispatch.job_take_next("gpu-a").pk == bobs.pk  # type: ignore[union-attr]
        assert dispatch.job_take_next("gpu-b") is None, "Alice's job waits while she is at her limit"


def test_a_retry_before_its_backoff_is_not_taken(two_backends):
    from django.utils import timezone

    job = submit()
    Job.objects.filter(pk=job.pk).update(not_before=timezone.now() + timedelta(minutes=1))
    assert dispatch.job_take_next("gpu-a") is None


def test_a_requeued_job_is_unbound_again(two_backends):
    job = submit()
    taken = dispatch.job_take_next("gpu-a")
    assert taken is not None
    services.job_transition(taken, JobStatus.RUNNING)
    services.job_fail(taken, "lost", "ComfyUI restarted")
    taken.refresh_from_db()
    assert (taken.status, taken.backend, taken.attempt) == (JobStatus.QUEUED, "", 2)
    assert job.pk == taken.pk


def test_a_take_costs_the_same_queries_at_10_and_500_waiting(two_backends):
    users = [UserFactory.create() for _ in range(5)]
    for index in range(10):
        submit(users[index % 5])
    take_and_finish("gpu-a")  # the backend's row is made by the first take
    with CaptureQueriesContext(connection) as few:
        take_and_finish("gpu-a")
    Job.objects.bulk_create(
        [Job(user=users[i % 5], workflow=SLEEP_WORKFLOW, job_type="image", fair_turn=i) for i in range(500)]
    )
    take_and_finish("gpu-a")
    with CaptureQueriesContext(connection) as many:
        take_and_finish("gpu-a")
    assert len(many) == len(few) <= 30, "\n".join(query["sql"][:150] for query in few.captured_queries)


def test_a_take_a_wake_asked_for_does_not_first_ask_whether_anything_waits(two_backends):
    submit()
    submit()
    take_and_finish("gpu-a")  # the backend's row is made by the first take
    with CaptureQueriesContext(connection) as asked:
        assert dispatch.job_take_next("gpu-a") is not None
    Job.objects.filter(status=JobStatus.SUBMITTED).update(status=JobStatus.COMPLETED)
    submit()
    with CaptureQueriesContext(connection) as woken:
        assert dispatch.job_take_next("gpu-a", woken=True) is not None

    sql = [query["sql"] for query in woken.captured_queries]
    assert len(sql) == len(asked) - 1, "\n".join(sql)
    assert not any(statement.startswith("SELECT 1 AS") for statement in sql)
    with CaptureQueriesContext(connection) as empty:
        assert dispatch.job_take_next("gpu-b") is None
    assert len(empty) == 1  # nothing waits for it: one query, not the whole take


def test_a_young_job_no_other_free_backend_can_run_costs_its_take_no_speed_comparison(two_backends):
    # The speed preference asks whether the job was left to this backend (a cache round trip) and
    # what history says of it (its workflow): only where another free backend could run it.
    submit(backend="gpu-a")  # pinned: gpu-b, free, cannot take it
    with (
        mock.patch.object(dispatch, "cache", wraps=dispatch.cache) as cache_used,
        mock.patch.object(dispatch, "_faster_elsewhere", wraps=dispatch._faster_elsewhere) as compared,
    ):
        assert dispatch.job_take_next("gpu-a", woken=True) is not None
    assert not cache_used.get.called and not compared.called
    submit()  # any backend may run it: gpu-b is asked about
    Job.objects.filter(status=JobStatus.SUBMITTED).update(status=JobStatus.COMPLETED)
    with mock.patch.object(dispatch, "_faster_elsewhere", wraps=dispatch._faster_elsewhere) as compared:
        assert dispatch.job_take_next("gpu-a", woken=True) is not None
    assert compared.called


@pytest.mark.django_db(transaction=True)  # the refresher reads on a connection of its own
def test_a_take_after_a_quiet_spell_serves_the_others_facts_as_read_while_a_thread_reads_them(two_backends):
    for _ in range(3):
        submit()
    take_and_finish("gpu-a")  # reads every backend's facts: gpu-b in service
    Backend.objects.update_or_create(name="gpu-b", defaults={"draining": True})  # as another process would

    def backend_reads(older_by: float) -> list[str]:
        catalog._recent[1] -= older_by  # the facts as read that much longer ago
        with CaptureQueriesContext(connection) as queries:
            take_and_finish("gpu-a")
        return [query["sql"] for query in queries.captured_queries if "fleet_backend" in query["sql"]]

    served = backend_reads(dispatch.OTHERS_FACTS_MAX_AGE + 1)
    assert len(served) == 1 and "gpu-b" not in served[0], "only its own row, which it locks"
    refreshes_wait()
    facts = backend_facts_as_read()
    assert facts is not None and facts[1] < 1 and {f.name for f in facts[0] if f.draining} == {"gpu-b"}

    assert len(backend_reads(dispatch.OTHERS_FACTS_STALE_SECONDS)) == 2, "too old to serve: read by the take"


# --- fit at submit: a 400 naming what is missing -----------------------------------------------


def post(api: Any, user: Any, **body: Any) -> Any:
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_for(user)}")
    payload = {"workflow": SLEEP_WORKFLOW, "job_type": "image", **body}
    return api.post("/api/jobs/", payload, format="json")


@pytest.fixture
def api() -> Any:
    from rest_framework.test import APIClient

    return APIClient()


def test_a_job_no_backend_has_the_node_class_for_is_a_400_naming_it(two_backends, api):
    lacking = {name: spec for name, spec in OBJECT_INFO.items() if name != "TestSleep"}
    backend_catalog_store("gpu-a", lacking)
    backend_catalog_store("gpu-b", lacking)
    response = post(api, UserFactory.create())
    assert response.status_code == 400
    assert "node class TestSleep" in str(response.json()) and not Job.objects.exists()


@pytest.mark.django_db(transaction=True)  # the refresher reads on a connection of its own
def test_a_submit_serves_the_facts_as_read_lately_and_checks_a_refusal_against_fresh_ones(two_backends, api):
    lacking = {name: spec for name, spec in OBJECT_INFO.items() if name != "TestSleep"}
    backend_catalog_store("gpu-a", lacking)
    backend_catalog_store("gpu-b", lacking)
    user = UserFactory.create()
    assert post(api, user).status_code == 400, "neither has TestSleep"

    # Both were given it since, as another process stored it: the facts read here say otherwise.
    classes, files = catalog.catalog_from_object_info(OBJECT_INFO)
    Backend.objects.update(node_classes=classes, model_files=files)
    response = post(api, user)
    assert response.status_code == 201, "a refusal on facts read lately waits for fresh ones to say so"

    catalog._recent[1] -= FRESH_SECONDS + 0.5  # the facts as read a second and a half ago
    with CaptureQueriesContext(connection) as queries:
        assert post(api, user).status_code == 201
    assert not [query for query in queries.captured_queries if "fleet_backend" in query["sql"]], "served as read"
    refreshes_wait()
    facts = backend_facts_as_read()
    assert facts is not None and facts[1] < FRESH_SECONDS, "and read again by the refresher meanwhile"


def test_a_missing_model_file_or_label_is_a_400_naming_it(two_backends, api):
    backend_catalog_store("gpu-a", OBJECT_INFO)
    backend_catalog_store("gpu-b", OBJECT_INFO)
    loader = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "nope.ckpt"}}
    missing_model = {**SLEEP_WORKFLOW, "4": loader}
    response = post(api, UserFactory.create(), workflow=missing_model)
    assert response.status_code == 400 and "model file nope.ckpt" in str(response.json())
    response = post(api, UserFactory.create(), requires=["vram:80g"])
    assert response.status_code == 400 and "label vram:80g" in str(response.json())
    assert not Job.objects.exists()


def test_labels_are_bounded_and_shown(two_backends, api):
    assert post(api, UserFactory.create(), requires=["<script>"]).status_code == 400
    assert post(api, UserFactory.create(), requires=["x"] * 17).status_code == 400
    response = post(api, UserFactory.create(), requires=["video"])
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["requires"] == ["video"] and body["backend"] == ""
    assert body["waiting_for"] == "a free backend with label video"


def test_a_backend_whose_object_info_is_unknown_does_not_refuse_submits(two_backends, api):
    backend_catalog_store("gpu-a", {"SaveImage": OBJECT_INFO["SaveImage"]})  # lacks the rest
    # gpu-b was never probed: it may have them
    assert post(api, UserFactory.create()).status_code == 201
    assert dispatch.job_take_next("gpu-a") is None
    assert dispatch.job_take_next("gpu-b") is not None


# --- waking ------------------------------------------------------------------------------------


def test_a_new_job_wakes_each_idle_backend_that_can_run_it_once(two_backends, django_capture_on_commit_callbacks):
    with mock.patch("celery.canvas.Signature.apply_async") as sent, django_capture_on_commit_callbacks(execute=True):
        for _ in range(5):
            submit(requires=["video"])
    queues = [call.kwargs["queue"] for call in sent.call_args_list]
    assert [queue for queue in queues if queue.startswith("gpu.")] == ["gpu.gpu-b"], "one pending wake per backend"


def test_a_new_job_wakes_one_idle_backend_and_a_burst_spreads_over_them(
    two_backends, django_capture_on_commit_callbacks
):
    def submit_woken() -> list[str]:
        """The GPU queues woken by one submit (sent once its transaction commits)."""
        with (
            mock.patch("celery.canvas.Signature.apply_async") as sent,
            django_capture_on_commit_callbacks(execute=True),
        ):
            submit()
        return [call.kwargs["queue"] for call in sent.call_args_list if call.kwargs["queue"].startswith("gpu.")]

    cache.delete_many([wake_mark("gpu-a"), wake_mark("gpu-b")])  # no wake pending from a test before
    assert submit_woken() == ["gpu.gpu-a"], "one GPU for one job: the others do not race for it"
    assert submit_woken() == ["gpu.gpu-b"], "gpu-a has a wake pending: the next job wakes gpu-b"
    assert submit_woken() == [], "each has a wake pending and takes the best job it can run"
    assert take_and_finish("gpu-a") is not None  # gpu-a's worker ran its wake
    assert submit_woken() == ["gpu.gpu-a"], "its take spent the wake: it may be woken again"


def test_a_wake_is_sent_again_once_the_backend_took_from_the_queue(two_backends, django_capture_on_commit_callbacks):
    cache.delete(wake_mark("gpu-a"))
    with mock.patch("celery.canvas.Signature.apply_async") as sent, django_capture_on_commit_callbacks(execute=True):
        backends_wake(["gpu-a"])
        backends_wake(["gpu-a"])
        assert dispatch.job_take_next("gpu-a") is None  # nothing waits: the wake is spent all the same
        backends_wake(["gpu-a"])
    assert sent.call_count == 2


def test_a_shifts_take_spends_the_wake_once_the_prompt_is_in_and_an_empty_take_at_once(two_backends):
    # A GPU worker's shift holds the taken job's announcements until its prompt is in ComfyUI
    # (jobs.tracking.shift): the wake is spent with them, a cache round trip off the way to the prompt.
    submit()
    cache.set(wake_mark("gpu-a"), 1)
    with ExitStack() as held:
        assert dispatch.job_take_next("gpu-a", held=held) is not None
        assert cache.get(wake_mark("gpu-a")) == 1, "a busy backend: no new job wakes it meanwhile"
    assert cache.get(wake_mark("gpu-a")) is None, "spent once the prompt is in: it may be woken again"

    cache.set(wake_mark("gpu-b"), 1)
    with ExitStack() as held:
        assert dispatch.job_take_next("gpu-b", held=held) is None
        assert cache.get(wake_mark("gpu-b")) is None, "still idle: the next new job must wake it"


def test_the_admin_shows_what_a_waiting_job_waits_for_and_where_a_bound_one_runs(two_backends, admin_client):
    waiting = submit(requires=["video"])
    page = admin_client.get(f"/admin/jobs/job/{waiting.id}/change/").content.decode()
    assert "a free backend with label video" in page
    taken = dispatch.job_take_next("gpu-b")
    assert taken is not None
    page = admin_client.get(f"/admin/jobs/job/{taken.id}/change/").content.decode()
    assert "gpu-b" in page and "a free backend" not in page


def test_a_poison_job_fails_after_its_attempts_and_the_backend_is_not_blamed(two_backends, settings):
    poison = submit()
    for attempt in range(1, settings.JOB_MAX_ATTEMPTS + 1):
        Job.objects.filter(pk=poison.pk).update(not_before=None)  # its backoff, skipped
        taken = dispatch.job_take_next("gpu-a")
        assert taken is not None and taken.pk == poison.pk and taken.attempt == attempt
        services.job_transition(taken, JobStatus.RUNNING)
        services.job_fail(taken, "lost", "ComfyUI dropped the prompt")  # it crashed ComfyUI again
    poison.refresh_from_db()
    assert poison.status == JobStatus.FAILED and poison.failure_category == "lost"
    healthy = submit()
    assert dispatch.job_take_next("gpu-a").pk == healthy.pk  # type: ignore[union-attr]


def test_a_job_left_to_a_faster_free_backend_wakes_it_and_comes_back_after_the_preference(
    two_backends, django_capture_on_commit_callbacks
):
    job = submit()
    for backend in ("gpu-a", "gpu-b"):
        wake_spent(backend)  # the wakes the submit sent have run
    speeds = {"gpu-a": 10.0, "gpu-b": 2.0}
    with (
        mock.patch.object(dispatch.eta, "expected_total_seconds", side_effect=lambda name, _: speeds[name]),
        mock.patch("celery.canvas.Signature.apply_async") as sent,
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert dispatch.job_take_next("gpu-a") is None, "gpu-b is five times faster and free"
    woken = {(call.kwargs["queue"], call.kwargs["countdown"] > 0) for call in sent.call_args_list}
    assert woken == {("gpu.gpu-b", False), ("gpu.gpu-a", True)}, "the faster now, this one when the preference ends"
    Job.objects.filter(pk=job.pk).update(
        created_at=job.created_at - timedelta(seconds=dispatch.SPEED_PREFERENCE_SECONDS)
    )
    with mock.patch.object(dispatch.eta, "expected_total_seconds", side_effect=lambda name, _: speeds[name]):
        assert dispatch.job_take_next("gpu-a").pk == job.pk  # type: ignore[union-attr]


def test_a_faster_free_backend_is_left_one_job_not_all_of_them(two_backends):
    first, second = submit(), submit()
    speeds = {"gpu-a": 10.0, "gpu-b": 2.0}
    with mock.patch.object(dispatch.eta, "expected_total_seconds", side_effect=lambda name, _: speeds[name]):
        taken = dispatch.job_take_next("gpu-a")
    assert taken is not None and taken.pk == second.pk, "gpu-b will start the first; the second is gpu-a's"
    assert Job.objects.get(pk=first.pk).status == JobStatus.QUEUED


def test_one_jobs_counted_place_agrees_with_the_whole_queue_read(two_backends):
    from jobs import selectors

    alice, bob = UserFactory.create(), UserFactory.create()
    jobs = [submit(alice) for _ in range(4)] + [submit(bob), submit(bob, priority=9), submit(alice, priority=0)]
    whole = selectors.queue_places(jobs)
    assert sorted(place.position for place in whole.values()) == list(range(1, 8))
    for job in jobs:
        assert selectors.queue_places([job])[job.pk].position == whole[job.pk].position


def test_two_backends_that_each_find_the_other_faster_do_not_both_leave_a_job(two_backends):
    job = submit()
    # Each worker learned its own timings: gpu-a thinks gpu-b is faster, gpu-b thinks gpu-a is.
    a_view = {"gpu-a": 10.0, "gpu-b": 2.0}
    b_view = {"gpu-a": 2.0, "gpu-b": 10.0}
    with mock.patch.object(dispatch.eta, "expected_total_seconds", side_effect=lambda name, _: a_view[name]):
        assert dispatch.job_take_next("gpu-a") is None, "left to gpu-b"
    with mock.patch.object(dispatch.eta, "expected_total_seconds", side_effect=lambda name, _: b_view[name]):
        taken = dispatch.job_take_next("gpu-b")
    assert taken is not None and taken.pk == job.pk, "the backend a job was left to takes it"


def test_a_backend_looks_past_the_first_batch_for_a_job_it_can_run(two_backends):
    for _ in range(dispatch.FIRST_BATCH + 3):
        submit(requires=["video"])  # gpu-b's only
    plain = submit()
    taken = dispatch.job_take_next("gpu-a")
    assert taken is not None and taken.pk == plain.pk
    assert Job.objects.filter(status=JobStatus.QUEUED).count() == dispatch.FIRST_BATCH + 3


def test_a_wait_for_a_wake_where_redis_cannot_be_asked_waits_its_time_out(monkeypatch):
    # The unit tests' cache is not Redis: a GPU worker waiting after its last job looks at the queue
    # between waits (jobs.tracking's linger), and must not look in a busy loop.
    slept: list[float] = []
    monkeypatch.setattr(wake.time, "sleep", slept.append)
    assert wake.wake_wait("gpu-a", 0.05) is False
    assert slept == [0.05]
