"""Reads: a user's front-door prompts, by client id, prompt id, or still waiting."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from comfy_api.models import FrontDoorPrompt
from jobs.models import ACTIVE_STATUSES, FINAL_STATUSES, JobStatus

# What ComfyUI's queue holds: waiting (queue_pending) or on a GPU (queue_running).
WAITING = (JobStatus.BLOCKED, JobStatus.QUEUED)
RUNNING = tuple(ACTIVE_STATUSES)


def user_prompts(user: Any) -> QuerySet[FrontDoorPrompt]:
    """The caller's own front-door prompts (a user sees only their own, staff too)."""
    if not getattr(user, "is_authenticated", False):
        return FrontDoorPrompt.objects.none()
    return FrontDoorPrompt.objects.filter(user=user).select_related("job")


def client_prompts(user: Any, client_id: str) -> QuerySet[FrontDoorPrompt]:
    """The prompts a websocket with this clientId hears of: submitted by this user with this client_id."""
    return user_prompts(user).filter(client_id=client_id)


def prompt_by_id(user: Any, prompt_id: str) -> FrontDoorPrompt | None:
    return user_prompts(user).filter(prompt_id=prompt_id).first()


def queued_prompts(user: Any) -> QuerySet[FrontDoorPrompt]:
    """The caller's prompts that are waiting or running, in queue-number order."""
    return user_prompts(user).filter(job__status__in=[*WAITING, *RUNNING]).order_by("number", "id")


def queue_remaining(user: Any) -> int:
    """ComfyUI's `exec_info.queue_remaining`, for this caller: their prompts not yet finished."""
    return user_prompts(user).exclude(job__status__in=list(FINAL_STATUSES)).count()


def history_prompts(user: Any) -> QuerySet[FrontDoorPrompt]:
    """The caller's finished prompts not hidden from their history, oldest first (as ComfyUI lists them)."""
    return user_prompts(user).filter(job__status__in=list(FINAL_STATUSES), hidden_at__isnull=True)
