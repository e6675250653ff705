"""The backends' facts (in service, node classes, model files) as this process read them lately,
served while the refresher reads them again: a submit's fit check, its wakes and its queue place,
and a take's view of the other backends, read them without a query between a new job and its
prompt (a submit after a quiet second read them itself: ~1.5 ms of a POST, every POST of a studio
that submits less than once a second)."""

from __future__ import annotations

from fleet.catalog import BackendFacts, backend_facts, backend_facts_as_read
from jobs.refresh_ahead import refresh_in_background

# Older than this, facts served are read again by the refresher; older than their `stale`, by the caller.
FRESH_SECONDS = 1.0
# A submit's: a backend just drained or just given a node class is seen this late at most by a submit
# (a refusal is checked again against fresh facts: jobs.services.job_create).
SUBMIT_STALE_SECONDS = 5.0


def facts_served(*, fresh: float = FRESH_SECONDS, stale: float = SUBMIT_STALE_SECONDS) -> list[BackendFacts]:
    """The facts as read: under `fresh` seconds old as they are; up to `stale`, as they are while the
    refresher reads them again; older (or never read), read here."""
    held = backend_facts_as_read()
    if held is None or held[1] >= stale:
        return backend_facts()
    if held[1] >= fresh:
        refresh_in_background(("backend facts",), backend_facts)
    return held[0]
