"""The tracker decodes ComfyUI's `progress` and `progress_state` only when it writes or broadcasts,
and what people see is still all there: the real tracker in this process against the simulator on
a thread, whose TestSleep reports a step every 10 ms (two frames each). Every node's start and end is
on the timeline in order, the last step is recorded, the progress broadcasts never go backwards,
and most frames were never decoded."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from devtools.simulator_process import InProcessSimulator
from jobs import services
from jobs.models import EventKind, JobStatus
from jobs.tracking import job_track
from jobs.tracking.session import ComfySession
from tests.factories import JobFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _system(settings: Any, tmp_path: Path, comfyui_sim: InProcessSimulator) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.COMFYUI_BACKENDS = {"default": comfyui_sim.url}


def sleep_workflow(seconds: float) -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": random.randrange(1 << 24)},
        },
        "2": {"class_type": "TestSleep", "inputs": {"value": ["1", 0], "seconds": seconds}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "held"}},
    }


def test_superseded_progress_is_never_decoded_and_nothing_people_see_is_lost() -> None:
    job = JobFactory.create(workflow=sleep_workflow(1.5))
    states: list[dict[str, Any]] = []
    frames_and_decoded: list[tuple[int, int]] = []
    real_receive = ComfySession.receive

    def receive(session: ComfySession, timeout: float) -> Any:
        message = real_receive(session, timeout)
        decoded = (frames_and_decoded[-1][1] if frames_and_decoded else 0) + (message is not None)
        frames_and_decoded.append((session.messages, decoded))
        return message

    with (
        mock.patch.object(services, "job_broadcast", lambda state, user_id, events=(), **_: states.append(state)),
        mock.patch.object(ComfySession, "receive", receive),
    ):
        job_track(str(job.id))

    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED and job.progress == 1.0
    nodes = [(e.kind, e.node_id) for e in job.events.order_by("seq") if e.kind in ("node_started", "node_finished")]
    assert nodes == [(kind, node) for node in ("1", "2", "3") for kind in ("node_started", "node_finished")]
    steps = [e.data for e in job.events.filter(kind=EventKind.STEPS, node_id="2").order_by("seq")]
    assert steps and steps[-1]["value"] == steps[-1]["max"], "the last step is on the timeline"
    running = [s for s in states if s["status"] == JobStatus.RUNNING and s["step"]]
    assert len(running) >= 5, "the sampler's steps were broadcast as it ran"
    values = [s["step"]["value"] for s in running if s["current_node"]["id"] == "2"]
    assert values == sorted(values)
    versions = [s["version"] for s in states]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    # (Status changes are broadcast after their commit, which this test's transaction never makes.)
    frames, decoded = frames_and_decoded[-1]
    assert frames > 250 and decoded < frames / 3, f"{decoded} of {frames} frames decoded"
