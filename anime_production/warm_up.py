"""A web process pays its one-time costs before it serves, not on some user's first request.

Measured in-process (POST /api/jobs/ on PostgreSQL, /tmp profile): a new process's first request
took 368 ms where the next ones took 33-36 ms. Django builds its URL resolver on first use, which
imports every view, serializer and schema module (231 ms), and the cache's Redis client imports
redis-py on first use (126 ms). Nothing here touches the network: a process whose database or
Redis is down still starts, and says so on its first request as before.

Celery's first publish in a process (a new job's wake) took 36-51 ms where the next took 1 ms: it
imported 33 modules, made the app's task classes, connected to the broker and declared the queue
(/tmp probe, 2026-12-07). The imports and the task classes are made here; the connection and the
queues are the lifespan's, in the background (broker_warm_up): with the GPU worker listening after
its last job, most wakes send no broker message, and the first that does came in some measured
POST at 106-147 ms (devtools/benchmarks/dispatch.py).
"""

from __future__ import annotations

import importlib
import logging

from celery import current_app
from django.conf import settings
from django.urls import get_resolver

from fleet.backends import gpu_queue

logger = logging.getLogger(__name__)

# What Celery imports on a process's first publish (kombu's transport, Celery's events and results).
PUBLISH_MODULES = (
    "celery.canvas",
    "celery.result",
    "celery.events.dispatcher",
    "kombu.message",
    "kombu.mixins",
    "kombu.utils.limits",
    "packaging.version",
)


def warm_up() -> None:
    len(get_resolver().url_patterns)  # imports every URL pattern, so every view module
    # The cache's client and the channel layer's, on first use. Not the channel layer itself: made
    # at import, it kept the settings of that moment (tests and tools change them after).
    importlib.import_module("redis")
    # Celery's publish path, without connecting: its modules, the broker's transport, the task classes.
    for module in PUBLISH_MODULES:
        importlib.import_module(module)
    app = current_app._get_current_object()
    app.finalize(auto=True)
    app.amqp.router  # noqa: B018 (made on first use)
    broker = app.connection_for_write()
    broker.transport  # noqa: B018 (imports kombu's transport module)
    broker.release()


def broker_warm_up() -> None:
    """Connect the process's broker producer and declare the GPU queues and the default queue, as
    the first publish to each would (a round trip or two each). A broker that is down only logs:
    the first wake then connects, as before."""
    app = current_app._get_current_object()
    names = [gpu_queue(backend) for backend in settings.COMFYUI_BACKENDS] + [settings.CELERY_TASK_DEFAULT_QUEUE]
    try:
        with app.producer_or_acquire() as producer:
            for name in names:
                producer.maybe_declare(app.amqp.queues[name])
    except Exception:
        logger.warning("the broker could not be reached at start; the first wake connects", exc_info=True)
