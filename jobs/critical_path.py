"""A pipeline's ETA: the longest chain of expected run times through its DAG, from now (pure).

Each job's remaining run time is what is known of it: a running job's own estimate, a waiting or
blocked job's expected total from the learned node timings, 0 once it ended, None when nothing is
known (it then counts as 0 and is reported as unknown). Jobs on different branches run side by side,
so the pipeline ends when its slowest chain does. Time waiting in a backend's queue behind other
people's jobs is not counted: the answer is an estimate of run time, labelled as one.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from graphlib import TopologicalSorter
from typing import TypeVar

Key = TypeVar("Key", bound=Hashable)


@dataclass(frozen=True)
class CriticalPath:
    seconds: float
    unknown_jobs: int  # jobs still to end whose run time nobody knows (counted as 0)


def critical_path(remaining: Mapping[Key, float | None], upstream: Mapping[Key, Iterable[Key]]) -> CriticalPath | None:
    """The longest path of remaining run times; None when no job is left to end, or none of those
    left has a known run time. `upstream` must be acyclic (jobs.pipelines refuses cycles)."""
    unknown = sum(1 for seconds in remaining.values() if seconds is None)
    if not any(seconds for seconds in remaining.values()):
        return None
    graph = {key: [u for u in upstream.get(key, ()) if u in remaining] for key in remaining}
    finish: dict[Key, float] = {}
    for key in TopologicalSorter(graph).static_order():
        before = max((finish[u] for u in graph[key]), default=0.0)
        finish[key] = before + max(remaining[key] or 0.0, 0.0)
    return CriticalPath(seconds=max(finish.values()), unknown_jobs=unknown)
