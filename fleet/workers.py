"""How the Celery workers of a deployment are started: one definition for run_system, Docker and the tests."""

from __future__ import annotations

from fleet.backends import gpu_queue

DEFAULT_QUEUE = "default"
# Webhook deliveries wait on other people's servers: a queue of their own, never a GPU's.
WEBHOOK_QUEUE = "webhooks"


def gpu_worker_args(backend: str) -> list[str]:
    """`celery -A anime_production` arguments of the one worker dedicated to `backend`'s GPU.

    One job at a time per GPU (concurrency 1, prefetch 1, fair scheduling): priority and cancel
    stay in our queue, and ComfyUI's own queue stays shallow.
    """
    return [
        "worker",
        "-Q",
        gpu_queue(backend),
        "--concurrency",
        "1",
        "--prefetch-multiplier",
        "1",
        "-n",
        f"gpu-{backend}@%h",
        "-O",
        "fair",
    ]


def default_worker_args(concurrency: int = 2) -> list[str]:
    """The worker of everything that is not a GPU job (sweeps, roll-ups, health probes)."""
    return ["worker", "-Q", DEFAULT_QUEUE, "--concurrency", str(concurrency), "-n", f"{DEFAULT_QUEUE}@%h"]


def webhook_worker_args(concurrency: int) -> list[str]:
    """The worker of webhook deliveries: each one may wait on a receiver for its timeouts, so
    several run at once, and a slow receiver never delays a job or a sweep."""
    return ["worker", "-Q", WEBHOOK_QUEUE, "--concurrency", str(concurrency), "-n", f"{WEBHOOK_QUEUE}@%h"]
