"""What a process keeps for a while (the ETA's history, a backend's node catalog) is read again in
the background once it is old: a submit or a free GPU's dispatch never waits for the read."""

from __future__ import annotations

import threading
import time
from functools import partial
from typing import Any
from unittest import mock

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from comfyui import ComfyUIClient, ComfyUIError
from jobs import eta, node_catalog, refresh_ahead
from jobs.refresh_ahead import refreshes_wait
from tests.unit.test_eta import finished_job, image_workflow


@pytest.fixture(autouse=True)
def _fresh_caches():
    eta.eta_cache_clear()
    node_catalog._catalogs.clear()
    yield
    refreshes_wait()
    eta.eta_cache_clear()
    node_catalog._catalogs.clear()


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(eta.time, "monotonic", lambda: now[0])  # the time module's, shared by both
    return now


def history_read_then_changed() -> dict[str, Any]:
    """History says node 8 takes 2 s and this process has read it; then its jobs take 9 s."""
    workflow = image_workflow()
    for _ in range(3):
        finished_job(workflow, "gpu-a", {"8": 2.0})
    assert eta.node_estimates("gpu-a", workflow, {"8"})["8"].seconds == pytest.approx(2.0)
    for _ in range(eta.SAMPLES_PER_KEY):
        finished_job(workflow, "gpu-a", {"8": 9.0})
    return workflow


@pytest.mark.django_db(transaction=True)  # the refresh reads on a connection of its own
def test_old_history_is_served_at_once_while_a_thread_reads_it_again(clock):
    workflow = history_read_then_changed()

    clock[0] += eta.HISTORY_CACHE_SECONDS + 1
    with CaptureQueriesContext(connection) as queries:
        served = eta.node_estimates("gpu-a", workflow, {"8"})["8"]
    assert served.seconds == pytest.approx(2.0)
    assert len(queries) == 0  # the caller's thread read nothing

    refreshes_wait()
    assert eta.node_estimates("gpu-a", workflow, {"8"})["8"].seconds == pytest.approx(9.0)


@pytest.mark.django_db
def test_history_older_than_the_stale_limit_is_read_before_it_is_used(clock):
    workflow = history_read_then_changed()

    # Nothing asked for half an hour (or every refresh failed): too old to serve.
    clock[0] += eta.HISTORY_STALE_SECONDS + 1
    assert eta.node_estimates("gpu-a", workflow, {"8"})["8"].seconds == pytest.approx(9.0)


class SlowObjectInfo(ComfyUIClient):
    """A backend whose /object_info answers only when the test lets it (or fails)."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9")
        self.names = {"KSampler": "KSampler"}
        self.calls = 0
        self.answer = threading.Event()
        self.answer.set()
        self.fail = False

    def clone(self) -> SlowObjectInfo:
        return self

    def object_info(self) -> dict[str, Any]:
        self.calls += 1
        assert self.answer.wait(10)
        if self.fail:
            raise ComfyUIError("connection refused", retryable=True)
        return {cls: {"display_name": name, "category": "sampling"} for cls, name in self.names.items()}


def test_old_node_catalog_is_served_while_it_is_fetched_again_once(clock):
    backend = SlowObjectInfo()
    assert node_catalog.node_catalog("gpu-a", backend).display_names == {"KSampler": "KSampler"}

    backend.names = {"KSampler": "KSampler (Advanced Sampling)"}
    backend.answer.clear()  # the backend takes its time answering
    clock[0] += node_catalog.CATALOG_TTL_SECONDS + 1
    for _ in range(3):  # three jobs start meanwhile: none waits, one fetch runs
        assert node_catalog.node_catalog("gpu-a", backend).display_names == {"KSampler": "KSampler"}
    backend.answer.set()
    refreshes_wait()
    assert backend.calls == 2
    assert node_catalog.node_catalog("gpu-a", backend).display_names == {"KSampler": "KSampler (Advanced Sampling)"}


def test_a_failed_catalog_fetch_keeps_what_was_known(clock):
    backend = SlowObjectInfo()
    node_catalog.node_catalog("gpu-a", backend)
    backend.fail = True
    clock[0] += node_catalog.CATALOG_TTL_SECONDS + 1
    assert node_catalog.node_catalog("gpu-a", backend).display_names == {"KSampler": "KSampler"}
    refreshes_wait()
    assert node_catalog.node_catalog("gpu-a", backend).display_names == {"KSampler": "KSampler"}
    refreshes_wait()
    assert backend.calls == 3  # asked again at the next use after the failure


def test_many_refreshes_due_at_once_run_one_after_another_on_one_thread():
    release = threading.Event()
    ran: list[tuple[int, int]] = []

    def refresh(number: int) -> None:
        release.wait(10)
        ran.append((number, threading.get_ident()))

    for number in range(20):  # twenty histories whose minute is up together
        refresh_ahead.refresh_in_background(("test", number), partial(refresh, number))
        refresh_ahead.refresh_in_background(("test", number), partial(refresh, -1))  # asked again: once
    release.set()
    refreshes_wait()
    assert [number for number, _ in ran] == list(range(20))
    assert len({thread for _, thread in ran}) == 1


def test_the_refresher_stops_when_idle_and_starts_again_when_asked(monkeypatch):
    monkeypatch.setattr(refresh_ahead, "IDLE_SECONDS", 0.05)
    ran: list[str] = []
    refresh_ahead.refresh_in_background("first", lambda: ran.append("first"))
    refreshes_wait()
    deadline = time.monotonic() + 5
    while refresh_ahead._thread is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert refresh_ahead._thread is None  # stopped, its connection closed

    refresh_ahead.refresh_in_background("second", lambda: ran.append("second"))
    refreshes_wait()
    assert ran == ["first", "second"]


@pytest.mark.django_db(transaction=True)  # the read-ahead reads on the refresher's connection
def test_a_gpu_worker_reads_its_backend_s_catalog_and_history_ahead_as_it_starts(settings, comfyui_sim):
    from comfyui.client import ComfyUIClient as Client
    from jobs.tracking.read_ahead import gpu_worker_read_ahead

    settings.COMFYUI_BACKENDS = {"gpu-a": comfyui_sim.url, "gpu-b": "http://127.0.0.1:9"}
    workflow = image_workflow()
    for _ in range(3):
        finished_job(workflow, "gpu-a", {"3": 12.0, "8": 2.0})

    assert gpu_worker_read_ahead(["gpu.gpu-a", "celery"]) == ["gpu-a"]
    refreshes_wait()
    # The first job's tracker: its catalog and its estimates known, nothing fetched or read.
    with mock.patch.object(Client, "object_info", side_effect=AssertionError("fetched on the job's path")):
        assert node_catalog.node_catalog("gpu-a", Client(comfyui_sim.url)).display_names
    assert "gpu-b" not in node_catalog._catalogs  # another worker's backend
    with CaptureQueriesContext(connection) as queries:
        estimates = eta.node_estimates("gpu-a", workflow, {"3", "8"})
    assert len(queries) == 0 and estimates["3"].seconds == pytest.approx(12.0)


def test_a_worker_of_no_gpu_queue_reads_nothing_ahead(settings):
    from jobs.tracking.read_ahead import gpu_worker_read_ahead

    settings.COMFYUI_BACKENDS = {"gpu-a": "http://127.0.0.1:9"}
    assert gpu_worker_read_ahead(["default"]) == []
    assert not node_catalog._catalogs
