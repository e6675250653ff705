"""ComfyUI's in-memory PromptQueue: pending heap, running items, history.

Nothing here survives a restart, exactly like ComfyUI. Every change of the number of remaining
tasks calls `on_change`, which broadcasts `status` (so a put and the worker's get each send one,
which is why two `status` messages follow every `POST /prompt`).
"""

from __future__ import annotations

import asyncio
import copy
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAXIMUM_HISTORY_SIZE = 10000

# (number, prompt_id, prompt, extra_data, outputs_to_execute, sensitive extra_data)
QueueItem = tuple[float, str, dict[str, Any], dict[str, Any], list[str], dict[str, Any]]


@dataclass(frozen=True)
class ExecutionStatus:
    status_str: str
    completed: bool
    messages: list[tuple[str, dict[str, Any]]]

    def as_dict(self) -> dict[str, Any]:
        return {"status_str": self.status_str, "completed": self.completed, "messages": self.messages}


def public_item(item: QueueItem) -> list[Any]:
    """The 5-element form ComfyUI shows in /queue and /history (sensitive extra_data removed)."""
    return list(item[:5])


class PromptQueue:
    def __init__(self, on_change: Callable[[], None]) -> None:
        self._on_change = on_change
        # Heap entries carry a sequence number so equal (number, prompt_id) pairs never compare dicts.
        self._heap: list[tuple[float, str, int, QueueItem]] = []
        self._sequence = itertools.count()
        self._running: dict[int, QueueItem] = {}
        self._task_counter = 0
        self._not_empty = asyncio.Event()
        self.history: dict[str, dict[str, Any]] = {}

    def put(self, item: QueueItem) -> None:
        heapq.heappush(self._heap, (item[0], item[1], next(self._sequence), item))
        self._not_empty.set()
        self._on_change()

    async def get(self) -> tuple[QueueItem, int]:
        while not self._heap:
            self._not_empty.clear()
            await self._not_empty.wait()
        item = heapq.heappop(self._heap)[3]
        item_id = self._task_counter
        self._running[item_id] = copy.deepcopy(item)
        self._task_counter += 1
        self._on_change()
        return item, item_id

    def task_done(self, item_id: int, history_result: dict[str, Any], status: ExecutionStatus) -> None:
        item = self._running.pop(item_id)
        if len(self.history) > MAXIMUM_HISTORY_SIZE:
            self.history.pop(next(iter(self.history)))
        entry: dict[str, Any] = {"prompt": public_item(item), "outputs": {}, "status": copy.deepcopy(status.as_dict())}
        entry.update(history_result)
        self.history[item[1]] = entry
        self._on_change()

    def tasks_remaining(self) -> int:
        return len(self._heap) + len(self._running)

    def current_queue(self) -> tuple[list[list[Any]], list[list[Any]]]:
        running = [public_item(item) for item in self._running.values()]
        # Heap order, not sorted: ComfyUI returns its heap list as it is.
        pending = [public_item(entry[3]) for entry in self._heap]
        return copy.deepcopy(running), copy.deepcopy(pending)

    def running_prompt_ids(self) -> list[str]:
        return [item[1] for item in self._running.values()]

    def wipe_queue(self) -> None:
        self._heap = []
        self._on_change()

    def delete_queue_item(self, prompt_id: str) -> bool:
        for index, entry in enumerate(self._heap):
            if entry[1] != prompt_id:
                continue
            if len(self._heap) == 1:
                # ComfyUI wipes (one status) and then reports the change again (a second status).
                self.wipe_queue()
            else:
                self._heap.pop(index)
                heapq.heapify(self._heap)
            self._on_change()
            return True
        return False

    def get_history(
        self, prompt_id: str | None = None, max_items: int | None = None, offset: int = -1
    ) -> dict[str, Any]:
        if prompt_id is not None:
            return {prompt_id: copy.deepcopy(self.history[prompt_id])} if prompt_id in self.history else {}
        if offset < 0 and max_items is not None:
            offset = len(self.history) - max_items
        out: dict[str, Any] = {}
        for index, (key, value) in enumerate(self.history.items()):
            if index >= offset:
                out[key] = value
                if max_items is not None and len(out) >= max_items:
                    break
        return copy.deepcopy(out)

    def wipe_history(self) -> None:
        self.history = {}

    def delete_history_item(self, prompt_id: str) -> None:
        self.history.pop(prompt_id, None)
