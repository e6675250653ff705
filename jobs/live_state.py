"""Jobs and their timeline events shaped by the project's serializers, without building them anew
for every job: REST, websocket snapshots and the tracker's broadcasts all shape jobs here.

A DRF ModelSerializer builds its fields again for each instance it is created for (deep copies
and model introspection): 22 % of a tracker's CPU went there at 8 broadcasts a second (issue 12),
and 4.4 ms of each POST /api/jobs/ (cProfile, 30 POSTs). One serializer per thread, kept, shapes
every job after the first, the way DRF's `many=True` shapes every item of a list with one child.
The output is the serializers' own, so a field added to JobSerializer reaches every client
(tests/unit/test_live_state.py compares with serializers built afresh).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jobs.models import Job, JobEvent
from jobs.serializers import JobEventSerializer, JobSerializer

if TYPE_CHECKING:
    from jobs.queue_eta import QueuePlace


class _Shapers(threading.local):
    """This thread's serializers; the jobs' context is swapped in its dict for each call."""

    def __init__(self) -> None:
        self.context: dict[str, Any] = {"queue_places": {}}
        self.job = JobSerializer(context=self.context)
        self.event = JobEventSerializer()


_shapers = _Shapers()


def job_payloads(jobs: Sequence[Job], places: Mapping[uuid.UUID, QueuePlace]) -> list[dict[str, Any]]:
    """What JobSerializer(jobs, many=True, context={"queue_places": places}).data holds, as plain
    dicts; `places` from selectors.queue_places."""
    _shapers.context["queue_places"] = places
    try:
        return [_shapers.job.to_representation(job) for job in jobs]
    finally:
        _shapers.context["queue_places"] = {}


def live_event_payloads(events: Iterable[JobEvent]) -> list[dict[str, Any]]:
    """What JobEventSerializer(events, many=True).data holds, as plain dicts."""
    return [_shapers.event.to_representation(event) for event in events]
