"""Jobs and their timeline events shaped by the project's serializers, without building them anew
for every job: REST, websocket snapshots and the tracker's broadcasts all shape jobs here.

A DRF ModelSerializer builds its fields again for each instance it is created for (deep copies
and model introspection): 22 % of a tracker's CPU went there at 8 broadcasts a second (issue 12),
and 4.4 ms of each POST /api/jobs/ (cProfile, 30 POSTs). One serializer per thread, kept, shapes
every job after the first, the way DRF's `many=True` shapes every item of a list with one child.
The output is the serializers' own, so a field added to JobSerializer reaches every client
(tests/unit/test_live_state.py compares with serializers built afresh).

A tracker's broadcasts (8 a second) shape only what progress changes (TrackedJobShape): the rest
of a job's 40 fields stays as it was shaped, until any other column changes.
"""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rest_framework.fields import SkipField

from jobs.models import PROGRESS_FIELDS, Job, JobEvent
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


# The columns a tracker changes while its job runs (jobs.tracking: the coalescer's progress fields,
# versions and seqs, previews, beats) and the serializer fields shaped from them or from the clock.
# A change to any other column shapes the whole job again. tests/unit/test_live_state.py changes
# each of these columns alone and compares with the whole job shaped afresh: a serializer field
# that reads one of them and is missing below fails there.
PROGRESS_COLUMNS = frozenset({*PROGRESS_FIELDS, "version", "seq", "heartbeat_at"})
SHAPED_AGAIN = (
    "progress",
    "progress_percent",
    "message",
    "current_node",
    "step",
    "nodes_total",
    "nodes_done",
    "cached_nodes",
    "eta",
    "preview_url",
    "seq",
    "version",
    "run_seconds",  # the clock's: a running job's is now - started_at
)


class TrackedJobShape:
    """One tracked job's state for its frequent broadcasts: what job_payloads gives, with only
    SHAPED_AGAIN shaped again while no other column changed (the columns are compared by value,
    a JSON column by identity first: a tracker replaces a value, it never edits one in place).
    Not for a waiting job, whose place in the queue is read with it (selectors.job_state)."""

    def __init__(self) -> None:
        self._static: tuple[Any, ...] | None = None
        self._shaped: dict[str, Any] = {}
        # Whether the latest state() shaped the whole job: a column other than progress changed.
        self.reshaped = False

    def state(self, job: Job) -> dict[str, Any]:
        static = tuple(getattr(job, name) for name in _static_attnames())
        self.reshaped = static != self._static
        if self.reshaped:
            self._shaped = job_payloads([job], {})[0]
            self._static = static
            return dict(self._shaped)
        state = dict(self._shaped)
        fields = _shapers.job.fields
        for name in SHAPED_AGAIN:
            # What Serializer.to_representation does for each field.
            field = fields[name]
            try:
                attribute = field.get_attribute(job)
            except SkipField:
                state.pop(name, None)
                continue
            state[name] = None if attribute is None else field.to_representation(attribute)
        return state


@functools.cache
def _static_attnames() -> tuple[str, ...]:
    return tuple(field.attname for field in Job._meta.concrete_fields if field.attname not in PROGRESS_COLUMNS)
