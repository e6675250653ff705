"""Telling a user's front-door sockets that their queue changed, when no job broadcast says so: a prompt
submitted (a new job is not broadcast until a GPU takes it) or deleted from the queue. Each socket then
sends ComfyUI's `status` with the caller's new `queue_remaining` (comfy_api.consumers)."""

from __future__ import annotations

from django.db import transaction

from jobs.broadcast import groups_broadcast


def front_door_group(user_id: int) -> str:
    return f"comfy-user-{user_id}"


def front_door_queue_changed(user_id: int) -> None:
    """After the current transaction commits (at once outside one). Never raises: a lost
    announcement costs a late `status`, the next job broadcast of the user's corrects it."""
    transaction.on_commit(
        lambda: groups_broadcast(
            [front_door_group(user_id)], {"type": "front_door.queue"}, what=f"front-door queue of user {user_id}"
        )
    )
