"""The registry a scrape reads: every process's counters and histograms, and the database's state.

With PROMETHEUS_MULTIPROC_DIR set, prometheus-client keeps each process's values in a file of that
directory, and a scrape sums the files of every process (the web processes, the GPU and default
workers, beat): a counter a GPU worker raised is seen by the web. prometheus-client picks its mode
when it is first imported, from the environment, so the variable must be set before a process starts
(run_system and Docker do). Without it, a scrape shows this process's values only.

Containers sharing one volume each need a directory of their own in it (pids repeat across
containers, and two processes with one pid would write one file): METRICS_MULTIPROC_ROOT names the
volume, and a scrape sums the files in it and in its subdirectories.
"""

from __future__ import annotations

import glob
import os
import threading
from collections.abc import Iterable

from django.conf import settings
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from metrics.collector import DATABASE_COLLECTOR
from metrics.recorder import PROCESS_REGISTRY


class ThisProcess(Collector):
    def collect(self) -> Iterable[Metric]:
        return PROCESS_REGISTRY.collect()


class AllProcesses(Collector):
    """The files of every process under `root`: in it, and one directory down (one per container)."""

    def __init__(self, root: str) -> None:
        self.root = root

    def files(self) -> list[str]:
        return sorted(glob.glob(os.path.join(self.root, "*.db")) + glob.glob(os.path.join(self.root, "*", "*.db")))

    def collect(self) -> Iterable[Metric]:
        return MultiProcessCollector.merge(self.files(), accumulate=True)


def multiproc_root() -> str:
    return settings.METRICS_MULTIPROC_ROOT or settings.PROMETHEUS_MULTIPROC_DIR


def scrape_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    root = multiproc_root()
    registry.register(AllProcesses(root) if root else ThisProcess())
    registry.register(DATABASE_COLLECTOR)
    return registry


_registry: CollectorRegistry | None = None
_registry_lock = threading.Lock()


def metrics_text() -> bytes:
    """The Prometheus text format of everything this deployment measures."""
    global _registry
    with _registry_lock:
        if _registry is None:
            _registry = scrape_registry()
    return generate_latest(_registry)
