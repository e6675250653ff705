"""A job's state and timeline events as the tracker broadcasts them, shaped by the same serializers
as REST, without building them anew for every broadcast.

A DRF ModelSerializer builds its fields again for each instance it is created for (deep copies
and model introspection): 22 % of a tracker's CPU went there at 8 broadcasts a second (issue 12). One
serializer per thread, kept, shapes every job after the first, the way DRF's `many=True` shapes
every item of a list with one child. The output is the serializers' own, so a field added to
JobSerializer reaches the browsers through here too (tests/unit/test_live_state.py compares).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from jobs import selectors
from jobs.models import Job, JobEvent
from jobs.serializers import JobEventSerializer, JobSerializer


class _Shapers(threading.local):
    """This thread's serializers; the job's context is swapped in its dict for each call."""

    def __init__(self) -> None:
        self.context: dict[str, Any] = {"queue_places": {}}
        self.job = JobSerializer(context=self.context)
        self.event = JobEventSerializer()


_shapers = _Shapers()


def job_live_state(job: Job) -> dict[str, Any]:
    """What selectors.job_state(job) returns, for the tracker's broadcasts."""
    # A running job reads no queue (no query); a waiting one needs its place.
    _shapers.context["queue_places"] = selectors.queue_places([job])
    return _shapers.job.to_representation(job)


def live_event_payloads(events: Sequence[JobEvent]) -> list[dict[str, Any]]:
    """What JobEventSerializer(events, many=True).data holds, as plain dicts."""
    return [_shapers.event.to_representation(event) for event in events]
