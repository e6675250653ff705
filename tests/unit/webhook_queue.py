"""The `webhooks` Celery queue of the unit tier: what was enqueued on it (kombu's in-memory broker,
tests/unit/conftest.py), and running it here, as the webhooks worker would."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import webhooks.tasks  # noqa: F401  (registers the tasks, as the worker's autodiscovery does)
from anime_production.celery import app
from fleet.workers import WEBHOOK_QUEUE


@dataclass(frozen=True)
class QueuedTask:
    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    eta: str | None


def webhook_queue_drain() -> list[QueuedTask]:
    """Every task waiting on the webhooks queue, taken off it."""
    tasks: list[QueuedTask] = []
    with app.connection_for_read() as connection:
        queue = connection.SimpleQueue(WEBHOOK_QUEUE)
        try:
            while True:
                try:
                    message = queue.get(block=False)
                except queue.Empty:
                    return tasks
                args, kwargs, _ = message.payload
                tasks.append(QueuedTask(message.headers["task"], args, kwargs, message.headers.get("eta")))
                message.ack()
        finally:
            queue.close()


def webhook_queue_run() -> list[QueuedTask]:
    """Run what waits on the webhooks queue now, in this process (countdowns are not waited for:
    an attempt that is not due yet does nothing, as in the worker)."""
    tasks = webhook_queue_drain()
    for task in tasks:
        app.tasks[task.name].run(*task.args, **task.kwargs)
    return tasks
