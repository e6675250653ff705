"""A running job's progress reaches the job lists (ws/jobs/: staff's and its owner's) at most once
per TRACKER_LIST_BROADCAST_INTERVAL, while its own page gets every broadcast; the lists are never
left behind: what they missed is sent to them once the interval is up, and a status change goes to
every group at once. The real tracker in this process against the simulator on a thread."""

from __future__ import annotations

import copy
import itertools
import random
import time
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from devtools.simulator_process import InProcessSimulator
from jobs import broadcast, services
from jobs.broadcast import STAFF_GROUP, ListPacer, job_group, user_group
from jobs.models import JobStatus
from jobs.progress import JobProgress
from jobs.tracking import coalescer, job_track
from jobs.tracking.timeline import Timeline
from tests.factories import SLEEP_WORKFLOW, JobFactory

LIST_INTERVAL = 0.3


@pytest.fixture(autouse=True)
def _system(settings: Any, tmp_path: Path, comfyui_sim: InProcessSimulator) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.COMFYUI_BACKENDS = {"default": comfyui_sim.url}
    settings.TRACKER_LIST_BROADCAST_INTERVAL = LIST_INTERVAL


def sleep_workflow(seconds: float) -> dict[str, Any]:
    """tests.factories' TestSleep graph, new to ComfyUI's cache (a colour of its own)."""
    workflow: dict[str, Any] = copy.deepcopy(SLEEP_WORKFLOW)
    workflow["1"]["inputs"]["color"] = random.randrange(1 << 24)
    workflow["2"]["inputs"]["seconds"] = seconds
    return workflow


@pytest.mark.django_db(transaction=True)  # status changes are broadcast once their transaction commits
def test_lists_get_a_running_job_s_progress_at_their_pace_and_never_stay_behind() -> None:
    job = JobFactory.create(workflow=sleep_workflow(2.0))
    page: list[tuple[float, dict[str, Any]]] = []  # every state the job's own page was sent
    lists: list[tuple[float, dict[str, Any]]] = []  # every state the job lists were sent
    real_lists_broadcast = broadcast.job_lists_broadcast

    def sent(state: dict[str, Any], user_id: int | None, events: Any = (), *, to_lists: bool = True) -> None:
        now = time.monotonic()
        page.append((now, state))
        if to_lists:
            lists.append((now, state))

    def caught_up(state: dict[str, Any], user_id: int | None) -> None:
        lists.append((time.monotonic(), state))
        real_lists_broadcast(state, user_id)

    with (
        mock.patch.object(services, "job_broadcast", sent),
        mock.patch.object(coalescer, "job_lists_broadcast", caught_up),
    ):
        job_track(str(job.id))

    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED
    running_page = [(at, s) for at, s in page if s["status"] == JobStatus.RUNNING and s["step"]]
    running_lists = [(at, s) for at, s in lists if s["status"] == JobStatus.RUNNING and s["step"]]
    # The page follows the sampler at the tracker's rate; the lists at theirs.
    assert len(running_page) >= 10, len(running_page)
    assert 3 <= len(running_lists) <= len(running_page) / 2, (len(running_lists), len(running_page))
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(running_lists)]
    assert min(gaps) >= LIST_INTERVAL * 0.9, gaps
    # Never behind for long: every state the page got, the lists got it or a newer one soon after.
    for at, state in page:
        newer = [when for when, listed in lists if when >= at and listed["version"] >= state["version"]]
        assert newer and newer[0] - at <= LIST_INTERVAL + 0.25, (state["version"], state["status"])
    # The end reaches every group.
    assert lists[-1][1]["status"] == JobStatus.COMPLETED and lists[-1][1]["version"] == page[-1][1]["version"]


def test_a_broadcast_kept_from_the_lists_goes_to_the_job_s_page_only(settings: Any) -> None:
    published: list[list[str]] = []
    state = {"id": "00000000-0000-0000-0000-000000000001", "version": 1, "status": "running"}
    with mock.patch.object(broadcast, "groups_broadcast", lambda groups, message, what: published.append(groups)):
        broadcast.job_broadcast(state, 7, to_lists=False)
        broadcast.job_broadcast(state, 7)
        broadcast.job_lists_broadcast(state, 7)
    page = job_group(state["id"])
    assert published == [[page], [page, STAFF_GROUP, user_group(7)], [STAFF_GROUP, user_group(7)]]


def test_the_pacer_holds_what_the_lists_missed_until_their_interval_is_up(settings: Any) -> None:
    settings.TRACKER_LIST_BROADCAST_INTERVAL = 0.5
    pacer = ListPacer()
    assert pacer.due(100.0) and pacer.catch_up_at() is None
    pacer.sent(100.0, {"version": 1}, to_lists=True)
    assert not pacer.due(100.2)
    pacer.sent(100.2, {"version": 2}, to_lists=False)
    assert pacer.behind == {"version": 2} and pacer.catch_up_at() == 100.5
    assert pacer.due(100.5)
    pacer.sent(100.6, None, to_lists=True)  # a status change, to every group
    assert pacer.behind is None and pacer.catch_up_at() is None and not pacer.due(100.7)


@pytest.mark.django_db
def test_progress_the_lists_missed_reaches_them_when_their_interval_is_up_though_nothing_else_comes(
    settings: Any,
) -> None:
    """A sampler's last step, kept from the lists, must not stay off them while the next node runs
    without reporting progress (a VAE decode, a video encode): the tracker's loop wakes for it."""
    settings.TRACKER_LIST_BROADCAST_INTERVAL = 0.5
    settings.TRACKER_BROADCAST_INTERVAL = 0.12
    job = JobFactory.create(workflow=sleep_workflow(1.0), status=JobStatus.RUNNING)
    progress = JobProgress(prompt_id=str(job.prompt_id), workflow=job.workflow)
    paced = coalescer.Coalescer(job, progress, {}, Timeline(job, progress, prompt_id=str(job.prompt_id)))
    clock = [100.0]
    sent: list[tuple[float, str, int]] = []

    def page_sent(state: dict[str, Any], user_id: int | None, events: Any = (), *, to_lists: bool = True) -> None:
        sent.append((clock[0], "all" if to_lists else "page", state["version"]))

    def lists_sent(state: dict[str, Any], user_id: int | None) -> None:
        sent.append((clock[0], "lists", state["version"]))

    with (
        mock.patch.object(coalescer.time, "monotonic", lambda: clock[0]),
        mock.patch.object(services, "job_broadcast", page_sent),
        mock.patch.object(coalescer, "job_lists_broadcast", lists_sent),
    ):
        for at in (100.0, 100.2):  # two steps, 0.2 s apart
            clock[0] = at
            paced.mark_changed()
            paced.flush_if_due()
        clock[0] = 100.3
        paced.flush_if_due()  # nothing new: the lists are not due yet
        waited = paced.wait_time()
        clock[0] = 100.5
        paced.flush_if_due()

    first, second = sent[0][2], sent[1][2]
    assert sent == [(100.0, "all", first), (100.2, "page", second), (100.5, "lists", second)]
    assert waited == pytest.approx(0.2), "the loop wakes when the lists are due"
