"""The learned ETA: fingerprints, history fallbacks, remaining time, weights, and its accuracy."""

from __future__ import annotations

import copy
import random
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from devtools.eta_accuracy import eta_accuracy, simulated_runs, training_history
from jobs import eta
from jobs.eta import NodeEstimate
from jobs.models import JobStatus, NodeTiming
from jobs.refresh_ahead import refreshes_wait
from tests.factories import JobFactory


def image_workflow(*, steps: int = 20, width: int = 512, height: int = 512, batch: int = 1) -> dict[str, Any]:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a castle at dusk", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": batch}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": 42, "steps": steps, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0],
        }},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "ComfyUI"}},
    }  # fmt: skip


def renumbered(workflow: dict[str, Any], offset: int) -> dict[str, Any]:
    def rename(value: Any) -> Any:
        return [str(int(value[0]) + offset), value[1]] if isinstance(value, list) else value

    return {
        str(int(node_id) + offset): {**node, "inputs": {k: rename(v) for k, v in node["inputs"].items()}}
        for node_id, node in workflow.items()
    }


@pytest.fixture(autouse=True)
def fresh_eta_cache():
    eta.eta_cache_clear()
    yield
    eta.eta_cache_clear()


# --- fingerprints -------------------------------------------------------------------------------


def test_fingerprint_ignores_seed_prompt_filenames_and_node_numbering():
    base = image_workflow()
    other = copy.deepcopy(base)
    other["3"]["inputs"]["seed"] = 123456789
    other["6"]["inputs"]["text"] = "a dragon over the sea, golden hour"
    other["9"]["inputs"]["filename_prefix"] = "shot_042"
    other["4"]["inputs"]["ckpt_name"] = "v1-5-pruned-emaonly.safetensors"

    fingerprint = eta.workflow_fingerprint(base)
    assert len(fingerprint) <= 64 and int(fingerprint, 16) >= 0
    assert eta.workflow_fingerprint(other) == fingerprint
    assert eta.workflow_fingerprint(renumbered(base, 100)) == fingerprint


@pytest.mark.parametrize(
    "changed",
    [
        image_workflow(steps=30),
        image_workflow(width=1024, height=1024),
        image_workflow(batch=4),
    ],
    ids=["steps", "size", "batch"],
)
def test_fingerprint_changes_with_cost_inputs(changed):
    assert eta.workflow_fingerprint(changed) != eta.workflow_fingerprint(image_workflow())


def test_fingerprint_changes_with_frames_and_structure():
    video = {
        "1": {
            "class_type": "EmptyHunyuanLatentVideo",
            "inputs": {"width": 480, "height": 832, "length": 33, "batch_size": 1},
        },
        "2": {"class_type": "VAEDecode", "inputs": {"samples": ["1", 0]}},
    }
    longer = copy.deepcopy(video)
    longer["1"]["inputs"]["length"] = 81
    assert eta.workflow_fingerprint(longer) != eta.workflow_fingerprint(video)

    with_preview = image_workflow()
    with_preview["10"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
    assert eta.workflow_fingerprint(with_preview) != eta.workflow_fingerprint(image_workflow())


def test_node_cost_key_takes_the_sampler_size_from_its_latent():
    small, large = image_workflow(), image_workflow(width=1024, height=1024)
    assert eta.node_cost_key(small, "3") == "KSampler|steps=20|pixels=262144|batch=1"
    assert eta.node_cost_key(large, "8") == "VAEDecode|pixels=1048576|batch=1"
    # Prompts and seeds are not cost: the text encoders of both are the same.
    assert eta.node_cost_key(small, "6") == eta.node_cost_key(large, "7") == "CLIPTextEncode"


# --- estimates from history ---------------------------------------------------------------------


def finished_job(
    workflow: dict[str, Any], backend: str, durations: dict[str, float], *, status: str = JobStatus.COMPLETED
):
    """A finished job with the node timings the tracker would have written."""
    job = JobFactory.create(
        user=None, workflow=workflow, backend=backend, status=status, fingerprint=eta.workflow_fingerprint(workflow),
        finished_at=timezone.now(),
    )  # fmt: skip
    end = timezone.now() - timedelta(minutes=5)
    NodeTiming.objects.bulk_create(
        NodeTiming(
            job=job, node_id=node_id, class_type=workflow[node_id]["class_type"], backend=backend,
            fingerprint=job.fingerprint, started_at=end - timedelta(seconds=seconds), finished_at=end,
            duration=seconds, steps=workflow[node_id]["inputs"].get("steps"),
        )
        for node_id, seconds in durations.items()
    )  # fmt: skip
    return job


@pytest.mark.django_db
def test_estimates_fall_back_from_fingerprint_to_cost_key_to_class_to_default():
    workflow = image_workflow()
    sampler = {"3"}

    assert eta.node_estimates("gpu-a", workflow, sampler)["3"] == eta.DEFAULT_ESTIMATE

    # Only another backend has run a sampler, at twice the steps: scaled by the steps.
    for _ in range(3):
        finished_job(image_workflow(steps=40), "gpu-b", {"3": 8.0})
    eta.eta_cache_clear()
    estimate = eta.node_estimates("gpu-a", workflow, sampler)["3"]
    assert (estimate.source, estimate.samples) == ("class", 3)
    assert estimate.seconds == pytest.approx(4.0)

    # The same sampler cost on this backend, inside a different workflow.
    with_preview = image_workflow()
    with_preview["10"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
    for seconds in (2.0, 2.2, 2.4):
        finished_job(with_preview, "gpu-a", {"3": seconds})
    eta.eta_cache_clear()
    estimate = eta.node_estimates("gpu-a", workflow, sampler)["3"]
    assert (estimate.source, estimate.samples, estimate.seconds) == ("class+backend", 3, pytest.approx(2.2))
    assert estimate.seconds_per_step == pytest.approx(2.2 / 20)

    # This very workflow, with another seed and prompt: its own history wins.
    same = copy.deepcopy(workflow)
    same["3"]["inputs"]["seed"] = 7
    for seconds in (3.0, 3.1, 3.2):
        finished_job(same, "gpu-a", {"3": seconds})
    eta.eta_cache_clear()
    estimate = eta.node_estimates("gpu-a", workflow, sampler)["3"]
    assert (estimate.source, estimate.samples, estimate.seconds) == ("fingerprint", 3, pytest.approx(3.1))


@pytest.mark.django_db
def test_estimates_use_recent_timings_of_completed_jobs_only():
    workflow = image_workflow()
    for _ in range(eta.SAMPLES_PER_KEY):
        finished_job(workflow, "gpu-a", {"8": 9.0})
    NodeTiming.objects.update(finished_at=timezone.now() - timedelta(days=1))
    for _ in range(eta.SAMPLES_PER_KEY):
        finished_job(workflow, "gpu-a", {"8": 1.0})
    # A cancelled run stopped its decode midway: not what a decode takes.
    for _ in range(eta.SAMPLES_PER_KEY):
        finished_job(workflow, "gpu-a", {"8": 0.1}, status=JobStatus.CANCELLED)

    estimate = eta.node_estimates("gpu-a", workflow, {"8"})["8"]
    assert (estimate.seconds, estimate.samples) == (pytest.approx(1.0), eta.SAMPLES_PER_KEY)


@pytest.mark.django_db
def test_node_estimates_is_bounded_queries_then_served_from_cache(
    django_assert_max_num_queries, django_assert_num_queries
):
    workflow = image_workflow()
    for _ in range(5):
        finished_job(workflow, "gpu-a", {"4": 2.0, "3": 3.0, "8": 0.5})
    classes = {node["class_type"] for node in workflow.values()}
    # One bounded read per class and configured backend, and per class on any backend (each answered
    # by an index at any size of history), and one for the jobs' workflows.
    with django_assert_max_num_queries(len(classes) * (len(settings.COMFYUI_BACKENDS) + 1) + 1):
        first = eta.node_estimates("gpu-a", workflow, set(workflow))
    with django_assert_num_queries(0):
        again = eta.node_estimates("gpu-a", workflow, set(workflow))
    assert first == again
    assert first["3"].source == "fingerprint"


@pytest.mark.django_db
def test_queue_eta_adds_the_running_job_and_each_job_ahead():
    workflow = image_workflow()
    for _ in range(3):
        finished_job(workflow, "gpu-a", {n: 1.0 for n in workflow})
    assert eta.expected_total_seconds("gpu-a", workflow) == pytest.approx(7.0)
    assert eta.queue_eta_seconds("gpu-a", [("job-1", workflow), ("job-2", workflow)], 5.0) == pytest.approx(19.0)
    assert eta.queue_eta_seconds("gpu-a", [], 0.0) == 0.0
    # A job runs and nobody knows for how long; or a job ahead was never seen: unknowable.
    assert eta.queue_eta_seconds("gpu-a", [("job-1", workflow)], None) is None
    unknown = {"1": {"class_type": "SomeCustomNode", "inputs": {}}}
    assert eta.expected_total_seconds("gpu-a", unknown) is None
    assert eta.queue_eta_seconds("gpu-a", [("job-1", workflow), ("job-3", unknown)], 5.0) is None


@pytest.mark.django_db
def test_estimates_from_the_database_match_the_measured_model():
    """The accuracy measurement learns from timings in memory; the tracker from NodeTiming rows."""
    rng = random.Random(3)
    training, held_out = simulated_runs(rng, 40), simulated_runs(rng, 8, unseen_share=0.5)
    start = timezone.now() - timedelta(days=1)
    for index, run in enumerate(training):
        job = JobFactory.create(user=None, workflow=run.workflow, backend=run.backend, status=JobStatus.COMPLETED,
                         fingerprint=eta.workflow_fingerprint(run.workflow))  # fmt: skip
        NodeTiming.objects.bulk_create(
            NodeTiming(
                job=job, node_id=n.node_id, class_type=n.class_type, backend=run.backend, fingerprint=job.fingerprint,
                started_at=start, finished_at=start + timedelta(minutes=index, seconds=n.finished),
                duration=n.finished - n.started, steps=n.steps,
            )
            for n in run.nodes
        )  # fmt: skip
    history = training_history(training)
    sources = set()
    for run in held_out:
        nodes = set(run.workflow)
        from_rows = eta.node_estimates(run.backend, run.workflow, nodes)
        in_memory = eta.estimates_from_history(history, backend=run.backend, workflow=run.workflow, nodes=nodes)
        assert from_rows.keys() == in_memory.keys()
        for node_id, estimate in from_rows.items():
            assert (estimate.source, estimate.samples) == (in_memory[node_id].source, in_memory[node_id].samples)
            assert estimate.seconds == pytest.approx(in_memory[node_id].seconds)
            sources.add(estimate.source)
    assert {"fingerprint", "class+backend", "class"} <= sources


# --- remaining time and weights -----------------------------------------------------------------


def learned(seconds: float, samples: int = 5) -> NodeEstimate:
    return NodeEstimate(seconds=seconds, seconds_per_step=None, samples=samples, source="fingerprint")


def test_remaining_counts_nodes_not_run_and_skips_done_and_cached():
    estimates = {"load": learned(4.0), "encode": learned(1.0), "sample": learned(10.0), "save": learned(0.5)}
    remaining = eta.remaining_seconds(
        estimates, to_run=set(estimates), done={"encode"}, cached={"load"},
        current_node=None, step_value=None, step_max=None, current_started_seconds_ago=None,
    )  # fmt: skip
    assert remaining == pytest.approx(10.5)


def test_remaining_uses_the_observed_step_rate():
    # Nothing known about this sampler: its own pace is all there is (2 s per step here).
    estimates = {"load": learned(4.0), "sample": eta.DEFAULT_ESTIMATE}
    remaining = eta.remaining_seconds(
        estimates, to_run=set(estimates), done={"load"}, cached=set(),
        current_node="sample", step_value=5, step_max=20, current_started_seconds_ago=10.0,
    )  # fmt: skip
    assert remaining == pytest.approx(30.0)

    # History says 10 s, but this run is twice as slow: near the end its own pace dominates.
    estimates = {"sample": learned(10.0)}
    remaining = eta.remaining_seconds(
        estimates, to_run={"sample"}, done=set(), cached=set(),
        current_node="sample", step_value=18, step_max=20, current_started_seconds_ago=18.0,
    )  # fmt: skip
    history_only = max(10.0 - 18.0, 10.0 * eta.OVERRUN_REMAINING_FRACTION)
    assert history_only < remaining <= 2.0
    assert remaining > 1.8


def test_remaining_without_steps_is_expected_minus_elapsed_never_below_a_floor():
    estimates = {"decode": learned(6.0), "save": learned(1.0)}
    kwargs: dict[str, Any] = dict(
        to_run=set(estimates), done=set(), cached=set(), current_node="decode", step_value=None, step_max=None
    )
    assert eta.remaining_seconds(estimates, **kwargs, current_started_seconds_ago=2.0) == pytest.approx(5.0)
    overrun = eta.remaining_seconds(estimates, **kwargs, current_started_seconds_ago=60.0)
    assert 1.0 < overrun < 2.0


def test_remaining_is_none_when_nothing_is_known():
    estimates = {"a": eta.DEFAULT_ESTIMATE, "b": eta.DEFAULT_ESTIMATE}
    remaining = eta.remaining_seconds(
        estimates, to_run={"a", "b"}, done=set(), cached=set(),
        current_node="a", step_value=5, step_max=10, current_started_seconds_ago=3.0,
    )  # fmt: skip
    assert remaining is None
    assert eta.remaining_seconds({}, to_run=set(), done=set(), cached=set(), current_node=None,
                                 step_value=None, step_max=None, current_started_seconds_ago=None) is None  # fmt: skip


def test_remaining_by_pace_trusts_only_this_runs_own_pace():
    # History learned this sleep from short runs (0.2 s); this one sleeps 30 s. Two seconds in,
    # its steps show 28 s left, where the blended ETA still leans on history's "nearly done".
    estimates = {"sleep": learned(0.2), "save": learned(0.1)}
    kwargs: dict[str, Any] = dict(to_run=set(estimates), done=set(), cached=set(), current_node="sleep")
    paced = eta.remaining_seconds(
        estimates, **kwargs, step_value=2, step_max=30, current_started_seconds_ago=2.0, by_pace=True
    )
    assert paced == pytest.approx(28.1)
    assert eta.remaining_seconds(estimates, **kwargs, step_value=2, step_max=30, current_started_seconds_ago=2.0) < 3

    # A node without steps counts at history's estimate until it outruns it; then nothing is sure.
    no_steps = dict(kwargs, step_value=None, step_max=None)
    decode = {"sleep": learned(6.0), "save": learned(1.0)}
    assert eta.remaining_seconds(decode, **no_steps, current_started_seconds_ago=2.0, by_pace=True) == pytest.approx(
        5.0
    )
    assert eta.remaining_seconds(decode, **no_steps, current_started_seconds_ago=6.5, by_pace=True) is None
    # A node left that history does not know: unsure.
    unknown = {"sleep": learned(6.0), "save": eta.DEFAULT_ESTIMATE}
    assert eta.remaining_seconds(unknown, **no_steps, current_started_seconds_ago=2.0, by_pace=True) is None
    done: dict[str, Any] = dict(
        to_run={"sleep"}, done={"sleep"}, cached=set(), current_node=None, step_value=None, step_max=None
    )
    assert eta.remaining_seconds(decode, **done, current_started_seconds_ago=None, by_pace=True) == 0.0


def test_weights_are_expected_seconds_or_equal_when_nothing_is_known():
    assert eta.node_weights({"a": learned(1.0), "b": learned(9.0)}) == {"a": 1.0, "b": 9.0}
    assert eta.node_weights({"a": eta.DEFAULT_ESTIMATE, "b": eta.DEFAULT_ESTIMATE}) == {"a": 1.0, "b": 1.0}


# --- accuracy -----------------------------------------------------------------------------------


def test_learned_eta_beats_elapsed_over_fraction_at_ten_percent_of_the_run():
    report = eta_accuracy(seed=7, train=400, test=300)
    checkpoint = report.errors[("all", 0.10)]
    assert checkpoint.runs >= 150
    learned_error, naive_error = checkpoint.median("learned"), checkpoint.median("naive")
    assert learned_error < naive_error / 2
    assert learned_error < 0.15
    # Workflows never seen in training lean on the fallbacks and still beat the naive estimate.
    unseen = report.errors[("unseen workflow", 0.10)]
    assert unseen.median("learned") < unseen.median("naive")


@pytest.mark.django_db(transaction=True)  # the minute's refresh reads on a thread of its own
def test_what_history_knew_nothing_of_is_asked_again_within_seconds_not_a_minute(monkeypatch):
    eta.eta_cache_clear()
    workflow = image_workflow()
    clock = [1000.0]
    monkeypatch.setattr(eta.time, "monotonic", lambda: clock[0])
    assert eta.node_estimates("gpu-a", workflow, {"8"})["8"] == eta.DEFAULT_ESTIMATE

    # Another worker's first job completes: this process hears of it at its next read of history.
    for _ in range(3):
        finished_job(workflow, "gpu-a", {"8": 2.0})
    clock[0] += eta.HISTORY_UNKNOWN_CACHE_SECONDS + 0.1
    learned = eta.node_estimates("gpu-a", workflow, {"8"})["8"]
    assert learned.seconds == pytest.approx(2.0)

    # What it knows is kept the full minute, as before.
    for _ in range(eta.SAMPLES_PER_KEY):
        finished_job(workflow, "gpu-a", {"8": 9.0})
    clock[0] += eta.HISTORY_UNKNOWN_CACHE_SECONDS + 0.1
    assert eta.node_estimates("gpu-a", workflow, {"8"})["8"].seconds == pytest.approx(2.0)
    # After the minute it is read again in the background: served as it was until the read is in.
    clock[0] += eta.HISTORY_CACHE_SECONDS
    assert eta.node_estimates("gpu-a", workflow, {"8"})["8"].seconds == pytest.approx(2.0)
    refreshes_wait()
    assert eta.node_estimates("gpu-a", workflow, {"8"})["8"].seconds == pytest.approx(9.0)


@pytest.mark.django_db
def test_a_new_workflow_of_classes_already_read_needs_no_read_of_history():
    eta.eta_cache_clear()
    workflow = image_workflow()
    for _ in range(3):
        finished_job(workflow, "gpu-a", {"3": 12.0, "8": 2.0})
    eta.expected_total_seconds("gpu-a", workflow)  # this process reads every class of it once

    # An artist's other graph, made of the same kinds of node (a second decode of the same samples).
    other = {**workflow, "10": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}}}
    del other["9"]
    with CaptureQueriesContext(connection) as queries:
        estimates = eta.node_estimates("gpu-a", other, {"3", "8", "10"})
    assert len(queries) == 0
    assert estimates["10"].seconds == pytest.approx(2.0)  # learned from node 8's timings, same cost
    assert estimates["3"].seconds == pytest.approx(12.0)


@pytest.mark.django_db
def test_a_job_completed_here_is_learned_from_its_trackers_timings_as_from_its_rows_without_a_query():
    workflow = image_workflow()
    finished_job(workflow, "gpu-a", {"3": 12.0, "8": 2.0})

    def learned(*, from_tracker: bool) -> tuple[int, tuple[float, float]]:
        eta.eta_cache_clear()
        eta.expected_total_seconds("gpu-a", workflow)  # the classes this process has read
        slower = finished_job(workflow, "gpu-a", {"3": 30.0, "8": 5.0})  # completed since
        timed = {"timed": list(NodeTiming.objects.filter(job=slower))} if from_tracker else {}
        with CaptureQueriesContext(connection) as queries:
            eta.history_learn(slower, **timed)
        estimates = eta.node_estimates("gpu-a", workflow, {"3", "8"})
        slower.delete()  # each way learns from the same history
        return len(queries), (estimates["3"].seconds, estimates["8"].seconds)

    read_queries, from_rows = learned(from_tracker=False)
    tracker_queries, from_tracker = learned(from_tracker=True)
    assert (read_queries, tracker_queries) == (1, 0), "its timings were read again; its workflow never"
    assert from_tracker == from_rows
    assert from_rows[0] > 12.0 and from_rows[1] > 2.0, "the slower run was learned"


@pytest.mark.django_db
def test_a_catch_up_learns_what_completed_elsewhere_in_two_queries_as_a_whole_read_would():
    workflow, larger = image_workflow(), image_workflow(steps=40)
    nodes = set(workflow)
    for _ in range(3):
        finished_job(workflow, "gpu-a", {"3": 12.0, "8": 2.0})
    eta.node_estimates("gpu-a", workflow, nodes)  # every class of it is read whole and held here
    # Completed since: one in this process (learned at once), the others on other workers.
    eta.history_learn(finished_job(workflow, "gpu-a", {"3": 13.0, "8": 2.5}))
    for seconds in (20.0, 22.0):
        finished_job(workflow, "gpu-a", {"3": seconds, "8": 3.0})
    finished_job(larger, "gpu-b", {"3": 30.0})
    finished_job(workflow, "gpu-a", {"3": 99.0, "8": 99.0}, status=JobStatus.FAILED)  # stopped midway: not learned

    with CaptureQueriesContext(connection) as queries:
        eta._history_catch_up()
    assert len(queries) == 2, "the timings of the jobs completed since, and those jobs' workflows"
    eta._history_catch_up()  # the same jobs again, still inside its window: none is learned twice

    def estimates() -> list[dict[str, NodeEstimate]]:
        return [
            eta.node_estimates(backend, graph, nodes) for backend in ("gpu-a", "gpu-b") for graph in (workflow, larger)
        ]

    caught_up = estimates()
    assert caught_up[0]["3"].samples == 6  # 3 read, 1 learned here, 2 caught up
    assert caught_up[0]["3"].seconds == pytest.approx(12.5)
    eta.eta_cache_clear()
    assert caught_up == estimates(), "what a whole read of history says"


@pytest.mark.django_db(transaction=True)  # the catch-up and the whole read run on the refresher's thread
def test_history_is_caught_up_each_minute_and_read_whole_each_quarter_hour_when_deleted_jobs_leave(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(eta.time, "monotonic", lambda: clock[0])
    workflow = image_workflow()
    old = [finished_job(workflow, "gpu-a", {"8": 2.0}) for _ in range(3)]
    assert eta.node_estimates("gpu-a", workflow, {"8"})["8"].samples == 3

    for job in old:
        job.delete()  # a deletion is not news to a catch-up: it reads what completed since
    finished_job(workflow, "gpu-a", {"8": 4.0})
    clock[0] += eta.HISTORY_CACHE_SECONDS
    eta.node_estimates("gpu-a", workflow, {"8"})
    refreshes_wait()
    assert eta.node_estimates("gpu-a", workflow, {"8"})["8"].samples == 4

    clock[0] += eta.HISTORY_REREAD_SECONDS
    assert eta.node_estimates("gpu-a", workflow, {"8"})["8"].samples == 4  # served while it is read again
    refreshes_wait()
    after = eta.node_estimates("gpu-a", workflow, {"8"})["8"]
    assert (after.samples, after.seconds) == (1, pytest.approx(4.0))
