"""A GPU worker's process reads ahead, as it starts, what its first job would otherwise read on a
free GPU's path: its backend's node catalog (/object_info: megabytes, and seconds to answer, on a
studio install) and the ETA's history for the kinds of workflow submitted lately (80-130 ms cold
at a million jobs). A worker restarted by a deploy then starts its first job as fast as its next.

In the background, on the process's refresher (jobs.refresh_ahead): the worker takes jobs at once,
and a ComfyUI or a database that is down only logs. Called in each pool process as it starts
(anime_production/celery.py, Celery's worker_process_init).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.conf import settings

from fleet.backends import backend_client, gpu_queue
from jobs import eta
from jobs.node_catalog import catalog_read_ahead

logger = logging.getLogger(__name__)


def gpu_worker_read_ahead(queues: Iterable[str]) -> list[str]:
    """Read ahead for the backends whose GPU queue is among the worker's `queues`; returns them."""
    consumed = set(queues)
    backends = [name for name in settings.COMFYUI_BACKENDS if gpu_queue(name) in consumed]
    for backend in backends:
        catalog_read_ahead(backend, backend_client(backend))
    if backends:
        eta.history_warm_up()
        logger.info("reading ahead for backend %s: its node catalog and the ETA's history", ", ".join(backends))
    return backends
