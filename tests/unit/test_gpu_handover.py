"""A free GPU gets its next prompt as soon as ComfyUI is done with the last one, not once that job's
outputs are fetched and stored (jobs.tracking.shift); both jobs' heartbeats are kept meanwhile, so
no sweep takes either for an orphan however long the storing takes."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
import requests
from django.db import OperationalError

from jobs import eta, services, sweeps, tracking
from jobs.models import ACTIVE_STATUSES, Job, JobStatus
from jobs.tracking.claim import heartbeat_seconds
from tests.factories import SLEEP_WORKFLOW, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

_colours = iter(range(1, 1_000_000))


@pytest.fixture
def backend(settings: Any, tmp_path: Any, comfyui_sim: Any) -> Any:
    settings.COMFYUI_BACKENDS = {"default": comfyui_sim.url}
    settings.COMFYUI_DEFAULT_BACKEND = "default"
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.TRACKER_STALE_SECONDS = 1.0  # a beat every 0.25 s; the orphan sweep takes a job silent for 2 s
    return comfyui_sim


def submit(seconds: float) -> Job:
    workflow: dict[str, Any] = copy.deepcopy(SLEEP_WORKFLOW)
    workflow["2"]["inputs"]["seconds"] = seconds
    workflow["1"]["inputs"]["color"] = next(_colours)  # a new prompt each: ComfyUI serves a repeat from its cache
    return services.job_create(user=UserFactory.create(), workflow=workflow, job_type="image")


def received(sim: Any) -> list[str]:
    """The prompt ids the simulator received, in order."""
    return [entry["prompt_id"] for entry in requests.get(f"{sim.url}/sim/submissions", timeout=5).json()]


def test_the_next_prompt_goes_in_before_the_last_jobs_outputs_are_stored(backend, monkeypatch):
    first, second = submit(0.3), submit(0.3)
    store = services.job_output_store
    seen: dict[str, Any] = {}

    def slow_store(job: Job, client: Any, output: Any, **options: Any) -> Any:
        if job.pk == first.pk and not seen:
            time.sleep(3.0)  # longer than the orphan sweep's window (2 x TRACKER_STALE_SECONDS)
            seen["prompts"] = received(backend)
            seen["statuses"] = dict(Job.objects.values_list("pk", "status"))
            seen["swept"] = sweeps.sweep_orphaned_jobs()
        return store(job, client, output, **options)

    monkeypatch.setattr(services, "job_output_store", slow_store)
    assert tracking.backend_work("default") == 2

    assert seen["prompts"] == [str(first.prompt_id), str(second.prompt_id)], "the second prompt was already in"
    assert seen["statuses"][first.pk] == JobStatus.RUNNING, "the first job completes only with its outputs stored"
    assert seen["statuses"][second.pk] in ACTIVE_STATUSES
    assert seen["swept"] == 0, "neither job's heartbeat went stale while the outputs were stored"
    for job in (first, second):
        job.refresh_from_db()
        assert job.status == JobStatus.COMPLETED, job.error_message
        assert job.outputs.count() == 1
        assert job.attempt == 1 and job.deliveries == 1
    assert received(backend) == [str(first.prompt_id), str(second.prompt_id)], "one prompt per job"
    # The second job's events while the first was closed waited in its socket: none was lost.
    assert sorted(second.events.filter(kind="node_finished").values_list("node_id", flat=True)) == ["1", "2", "3"]
    assert heartbeat_seconds() == 0.25


def test_a_job_taken_at_the_handover_whose_prompt_is_refused_fails_and_the_next_is_taken(backend, monkeypatch):
    first = submit(0.2)
    refused = submit(0.2)
    refused.workflow["2"]["class_type"] = "NoSuchNode"
    Job.objects.filter(pk=refused.pk).update(workflow=refused.workflow)
    third = submit(0.2)

    assert tracking.backend_work("default") == 3

    for job in (first, refused, third):
        job.refresh_from_db()
    assert (first.status, refused.status, third.status) == (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.COMPLETED)
    assert refused.failure_category == "missing_node", refused.error_message


def prompt_times(sim: Any) -> dict[str, dict[str, float]]:
    """Per prompt the simulator took: when it was received, started and done (seconds, its clock)."""
    times: dict[str, dict[str, float]] = {}
    for entry in requests.get(f"{sim.url}/sim/submissions", timeout=5).json():
        times[entry["prompt_id"]] = {"received": entry["received_at"] / 1000}
    for prompt_id, entry in requests.get(f"{sim.url}/history", timeout=5).json().items():
        for event, data in entry["status"]["messages"]:
            times[prompt_id][event] = data["timestamp"] / 1000
    return times


def test_the_next_prompt_waits_in_comfyuis_queue_while_the_running_one_ends(backend, settings):
    settings.HANDOVER_AHEAD_SECONDS = 0.6
    eta.eta_cache_clear()  # what earlier tests taught this process of these nodes
    taught = submit(1.5)  # history learns how long these nodes take
    assert tracking.backend_work("default") == 1
    first, second = submit(1.5), submit(1.5)

    assert tracking.backend_work("default") == 2

    times = prompt_times(backend)
    one, two = times[str(first.prompt_id)], times[str(second.prompt_id)]
    # In ComfyUI's queue before the first ended, so the GPU went straight from one to the other...
    assert two["received"] < one["execution_success"], (one, two)
    assert two["execution_start"] >= one["execution_success"]
    # ...but not bound a whole job early: only once the first was expected to end within
    # HANDOVER_AHEAD_SECONDS (history says ~1.3 s for its 1.5-s node).
    assert two["received"] > one["execution_start"] + 0.5, (one, two)
    for job in (taught, first, second):
        job.refresh_from_db()
        assert job.status == JobStatus.COMPLETED, job.error_message
        assert job.attempt == 1 and job.deliveries == 1 and job.outputs.count() == 1
    assert received(backend) == [str(taught.prompt_id), str(first.prompt_id), str(second.prompt_id)]
    # The second job's events while it waited behind the first: none lost, and it ran after the first.
    assert sorted(second.events.filter(kind="node_finished").values_list("node_id", flat=True)) == ["1", "2", "3"]
    assert second.started_at is not None and first.finished_at is not None


def test_a_run_longer_than_its_history_gets_its_next_prompt_only_near_its_real_end(backend, settings):
    # History learned these nodes from a 0.2-s sleep; the next run sleeps 3 s. A guess from history
    # alone would put the next prompt in at once, binding it to this GPU for the whole run.
    settings.HANDOVER_AHEAD_SECONDS = 0.6
    eta.eta_cache_clear()
    taught = submit(0.2)
    assert tracking.backend_work("default") == 1
    first, second = submit(3.0), submit(0.2)

    assert tracking.backend_work("default") == 2

    times = prompt_times(backend)
    one, two = times[str(first.prompt_id)], times[str(second.prompt_id)]
    assert two["received"] > one["execution_start"] + 1.5, "taken by history's guess, not by the run's pace"
    assert two["received"] < one["execution_success"], "still put in before the first ended"
    for job in (taught, first, second):
        job.refresh_from_db()
        assert job.status == JobStatus.COMPLETED, job.error_message


def test_without_history_the_next_prompt_goes_in_only_once_comfyui_is_done(backend, settings):
    settings.HANDOVER_AHEAD_SECONDS = 60.0  # the whole job; but nothing known of its nodes
    eta.eta_cache_clear()
    first, second = submit(0.5), submit(0.5)

    assert tracking.backend_work("default") == 2

    times = prompt_times(backend)
    one, two = times[str(first.prompt_id)], times[str(second.prompt_id)]
    assert two["received"] >= one["execution_success"], (one, two)


def both_ran_once(sim: Any, first: Job, second: Job) -> None:
    """Both jobs completed on their first delivery, one prompt each, in order."""
    for job in (first, second):
        job.refresh_from_db()
        assert job.status == JobStatus.COMPLETED, job.error_message
        assert job.deliveries == 1
    assert received(sim) == [str(first.prompt_id), str(second.prompt_id)]


def test_a_job_made_while_the_last_one_is_cleaned_up_after_is_taken_by_the_same_shift(backend, monkeypatch):
    # Its wake would wait in the broker until the task that ran the last job ends: the shift looks
    # once more after its clean-up, and the new job goes in without that round trip.
    first = submit(0.2)
    learn = eta.history_learn
    made: list[Job] = []

    def learn_then_submit(job: Job, *args: Any, **kwargs: Any) -> None:
        learn(job, *args, **kwargs)
        if not made:
            made.append(submit(0.2))  # after the shift found nothing waiting, before its task ends

    monkeypatch.setattr(eta, "history_learn", learn_then_submit)

    assert tracking.backend_work("default") == 2

    both_ran_once(backend, first, made[0])


@pytest.mark.parametrize("heard", [True, False], ids=["its wake heard", "no wake: the backend was busy"])
def test_a_job_made_while_the_worker_waits_after_its_last_one_is_taken_by_the_same_task(
    backend, settings, monkeypatch, heard
):
    # Its wake reaches the waiting task through Redis (jobs.wake.wake_wait, tests/integration/
    # test_wake_wait.py); the broker's message would wait for the task to end. Here the wait is
    # answered as Redis would. A job made while the last one was ending sent no wake (the backend was
    # busy): a look at the queue finds it.
    settings.GPU_WORKER_LINGER_SECONDS = 1.0
    first = submit(0.2)
    made: list[Job] = []
    waits: list[float] = []

    def wake_wait(name: str, timeout: float) -> bool:
        waits.append(timeout)
        if not made:
            made.append(submit(0.2))
            return heard
        time.sleep(timeout)  # nothing more came
        return False

    monkeypatch.setattr(tracking, "wake_wait", wake_wait)
    assert tracking.backend_work("default") == 2

    both_ran_once(backend, first, made[0])
    looks = tracking.LINGER_LOOK_SECONDS
    assert waits[:4] == [looks, looks, 2 * looks, 4 * looks], "after each job: soon, then less and less often"


def test_a_job_whose_wake_saw_the_worker_listening_is_taken_after_its_wait_ended(backend, settings, monkeypatch):
    # A wake that finds the worker listening (jobs.wake.wake_listen) sends no broker message: here it
    # comes after the worker's last wait, and before the worker cleared its mark. The worker looks
    # at the queue once more after clearing it, and takes the job; then it waits again.
    settings.GPU_WORKER_LINGER_SECONDS = 0.3
    first = submit(0.2)
    made: list[Job] = []
    marks: list[str] = []

    def unlisten(name: str) -> None:
        marks.append("cleared")
        if not made:
            made.append(submit(0.2))  # its wake saw the mark: nothing else tells the worker

    monkeypatch.setattr(tracking, "wake_listen", lambda name, seconds: marks.append("listening"))
    monkeypatch.setattr(tracking, "wake_unlisten", unlisten)

    def no_wake(name: str, timeout: float) -> bool:
        time.sleep(timeout)
        return False

    monkeypatch.setattr(tracking, "wake_wait", no_wake)
    assert tracking.backend_work("default") == 2

    both_ran_once(backend, first, made[0])
    assert marks[0] == "listening" and marks.count("cleared") == 2, "it waited again after the job it found"
    assert marks[-1] == "cleared"


def test_a_lingering_worker_whose_database_connection_died_takes_the_next_job_on_a_new_one(
    backend, settings, monkeypatch
):
    # PostgreSQL restarted while the worker waited after its last job: the wake of a job made after
    # the restart reached the worker (no broker message: it listened), and its look at the queue met
    # the dead connection. It looks again on a new connection and takes the job.
    settings.GPU_WORKER_LINGER_SECONDS = 0.5
    first = submit(0.2)
    made: list[Job] = []
    take = tracking.Shift._take
    failed: list[str] = []

    def woken_once(name: str, timeout: float) -> bool:
        if not made:
            made.append(submit(0.2))
            return True
        time.sleep(timeout)
        return False

    def take_on_a_dead_connection(self: Any, ending: Any, *, woken: bool = False) -> Any:
        if made and not failed:
            failed.append("the connection was terminated")
            raise OperationalError("terminating connection due to administrator command")
        return take(self, ending, woken=woken)

    monkeypatch.setattr(tracking, "wake_listen", lambda name, seconds: None)
    monkeypatch.setattr(tracking, "wake_wait", woken_once)
    monkeypatch.setattr(tracking.Shift, "_take", take_on_a_dead_connection)
    assert tracking.backend_work("default") == 2

    assert failed, "the look met the dead connection"
    both_ran_once(backend, first, made[0])
