"""Running prompts: ComfyUI's PromptExecutor and prompt worker, on the server's event loop.

The message sequence a client sees is the product of this module, so it mirrors ComfyUI's
execution.py step for step: `execution_start`, `execution_cached`, then per node `progress_state`
(running), `executing`, progress, `executed` (output nodes), `progress_state` (finished); at the
end `execution_success` / `execution_error` / `execution_interrupted`, the history entry, a
`status` broadcast and `executing {node: null}`. Async nodes (TestSleep) run as tasks while the
executor goes on with other nodes; sync nodes are awaited in place; expanding nodes add a subgraph.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
import traceback
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .caching import CacheEntry, OutputCache
from .device import DeviceMemory
from .graph import DynamicPrompt, ExecutionList, is_link
from .node_registry import NodeRegistry
from .nodes import Node, NodeReturn, OutOfMemoryError
from .options import SimulatorOptions
from .progress import Preview, ProgressBar, ProgressRegistry
from .prompt_queue import ExecutionStatus, PromptQueue
from .sockets import BinaryEventType, SocketHub
from .validation import full_type_name

logger = logging.getLogger(__name__)

OOM_TIPS = (
    "This error means you ran out of memory on your GPU.\n\n"
    "TIPS: If the workflow worked before you might have accidentally set the batch_size to a large number."
)


class InterruptProcessingException(Exception):
    pass


class ExecutionResult(Enum):
    SUCCESS = 0
    FAILURE = 1
    PENDING = 2


@dataclass
class NodeFailure:
    node_id: str
    exception: BaseException
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class _PromptRun:
    """State of one prompt's execution."""

    prompt_id: str
    dynprompt: DynamicPrompt
    extra_data: dict[str, Any]
    progress: ProgressRegistry
    execution_list: ExecutionList
    results: dict[str, CacheEntry] = field(default_factory=dict)
    pending_async: dict[str, asyncio.Task[NodeReturn]] = field(default_factory=dict)
    pending_subgraph: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    ui_outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # A dict used as an ordered set: ComfyUI reports list(executed).
    executed: dict[str, None] = field(default_factory=dict)


@dataclass
class _NodeContext:
    unique_id: str
    options: SimulatorOptions
    device: DeviceMemory
    executor: PromptExecutor
    run: _PromptRun

    def progress_bar(self, total: float) -> ProgressBar:
        return ProgressBar(total, self.unique_id, self.executor.progress_hook(self.run))

    def input_read(self, entry: dict[str, Any]) -> None:
        self.executor.input_reads.append({"prompt_id": self.run.prompt_id, "node_id": self.unique_id, **entry})


@dataclass
class _Returned:
    outputs: tuple[Any, ...]
    ui: dict[str, Any] | None
    expand: dict[str, dict[str, Any]] | None


def _split_return(returned: NodeReturn) -> _Returned:
    if isinstance(returned, dict):
        return _Returned(tuple(returned.get("result", ())), returned.get("ui"), returned.get("expand"))
    return _Returned(tuple(returned), None, None)


def _format_value(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, bool, str)):
        return value
    return str(value)


class PromptExecutor:
    def __init__(self, registry: NodeRegistry, hub: SocketHub, options: SimulatorOptions, device: DeviceMemory) -> None:
        self.registry = registry
        self.hub = hub
        self.options = options
        self.device = device
        self.cache = OutputCache(registry)
        self.interrupt_requested = False
        self.success = False
        self.status_messages: list[tuple[str, dict[str, Any]]] = []
        self.history_result: dict[str, Any] = {"outputs": {}, "meta": {}}
        # What loaders read from the input folder, for tests (GET /sim/input_reads).
        self.input_reads: list[dict[str, Any]] = []

    def interrupt(self) -> None:
        self.interrupt_requested = True

    def throw_if_interrupted(self) -> None:
        if self.interrupt_requested:
            self.interrupt_requested = False
            raise InterruptProcessingException()

    async def execute(
        self, prompt: dict[str, Any], prompt_id: str, extra_data: dict[str, Any], execute_outputs: list[str]
    ) -> None:
        # An interrupt sent while nothing ran must not hit the next prompt.
        self.interrupt_requested = False
        self.hub.client_id = extra_data.get("client_id")
        self.success = True
        self.status_messages = []
        self._add_message("execution_start", {"prompt_id": prompt_id}, broadcast=False)

        dynprompt = DynamicPrompt(prompt)
        self.cache.set_prompt(dynprompt)
        cached_nodes = [node_id for node_id in prompt if self.cache.get(node_id) is not None]
        self._add_message("execution_cached", {"nodes": cached_nodes, "prompt_id": prompt_id}, broadcast=False)

        run = _PromptRun(
            prompt_id=prompt_id,
            dynprompt=dynprompt,
            extra_data=extra_data,
            progress=ProgressRegistry(prompt_id, dynprompt, self.hub),
            execution_list=ExecutionList(dynprompt, self.registry, lambda n: self.cache.get(n) is not None),
        )
        current_outputs = self.cache.all_node_ids()
        try:
            await self._run_nodes(run, execute_outputs, current_outputs)
        finally:
            # ComfyUI's asyncio.run() cancels whatever async node tasks are still pending.
            for task in run.pending_async.values():
                task.cancel()
        self.history_result = {
            "outputs": {node_id: ui["output"] for node_id, ui in run.ui_outputs.items()},
            "meta": {node_id: ui["meta"] for node_id, ui in run.ui_outputs.items()},
        }
        self.hub.last_node_id = None

    async def _run_nodes(self, run: _PromptRun, execute_outputs: list[str], current_outputs: list[str]) -> None:
        execution_list = run.execution_list
        for node_id in execute_outputs:
            execution_list.add_node(node_id)
        while not execution_list.is_empty():
            node_id = await execution_list.stage_node_execution()
            result, failure = await self._execute_node(run, node_id)
            self.success = result is not ExecutionResult.FAILURE
            if failure is not None:
                self._handle_execution_error(run, current_outputs, failure)
                return
            if result is ExecutionResult.PENDING:
                execution_list.unstage_node_execution()
            else:
                execution_list.complete_node_execution()
        self._add_message("execution_success", {"prompt_id": run.prompt_id}, broadcast=False)

    def _add_message(self, event: str, data: dict[str, Any], broadcast: bool) -> None:
        data = {**data, "timestamp": int(time.time() * 1000)}
        self.status_messages.append((event, data))
        if self.hub.client_id is not None or broadcast:
            self.hub.send_sync(event, data, self.hub.client_id)

    def _handle_execution_error(self, run: _PromptRun, current_outputs: list[str], failure: NodeFailure) -> None:
        message: dict[str, Any] = {
            "prompt_id": run.prompt_id,
            "node_id": failure.node_id,
            "node_type": run.dynprompt.original_prompt[failure.node_id]["class_type"],
            "executed": list(run.executed),
        }
        if isinstance(failure.exception, InterruptProcessingException):
            self._add_message("execution_interrupted", message, broadcast=True)
            return
        message.update(
            exception_message=failure.details["exception_message"],
            exception_type=failure.details["exception_type"],
            traceback=failure.details["traceback"],
            current_inputs=failure.details["current_inputs"],
            current_outputs=list(current_outputs),
        )
        self._add_message("execution_error", message, broadcast=False)

    def progress_hook(self, run: _PromptRun) -> Any:
        """What ComfyUI's hijacked ProgressBar hook does on every update."""

        def hook(value: float, total: float, preview: Preview | None, node_id: str) -> None:
            self.throw_if_interrupted()
            run.progress.update_progress(node_id, value, total, preview)
            progress = {"value": value, "max": total, "prompt_id": run.prompt_id, "node": node_id}
            self.hub.send_sync("progress", progress, self.hub.client_id)
            if preview is not None and not self.hub.supports_preview_metadata(self.hub.client_id):
                payload = struct.pack(">I", preview.type_number) + preview.data
                self.hub.send_sync(BinaryEventType.PREVIEW_IMAGE, payload, self.hub.client_id)

        return hook

    async def _execute_node(self, run: _PromptRun, unique_id: str) -> tuple[ExecutionResult, NodeFailure | None]:
        dynprompt = run.dynprompt
        cached = self.cache.get(unique_id)
        if cached is not None:
            self._replay_cached(run, unique_id, cached)
            return ExecutionResult.SUCCESS, None

        input_data: dict[str, list[Any]] | None = None
        try:
            returned: _Returned | None = None
            if unique_id in run.pending_async:
                returned = _split_return(run.pending_async.pop(unique_id).result())
            elif unique_id in run.pending_subgraph:
                outputs = self._resolve_subgraph_outputs(run, unique_id)
            else:
                node = dynprompt.get_node(unique_id)
                cls = self.registry[node["class_type"]]
                run.progress.start_progress(unique_id)
                input_data = self._input_data(run, unique_id, node, cls)
                self._send_executing(run, unique_id)
                returned = await self._start_node(run, unique_id, cls, input_data)
                if returned is None:
                    return ExecutionResult.PENDING, None
            if returned is not None:
                if returned.ui:
                    self._record_ui(run, unique_id, returned.ui)
                if returned.expand is not None:
                    self._expand(run, unique_id, returned)
                    return ExecutionResult.PENDING, None
                outputs = [[value] for value in returned.outputs]
            entry = CacheEntry(outputs=outputs, ui=run.ui_outputs.get(unique_id))
            run.results[unique_id] = entry
            self.cache.set(unique_id, entry)
        except InterruptProcessingException as interrupt:
            logger.info("Processing interrupted")
            return ExecutionResult.FAILURE, NodeFailure(dynprompt.get_real_node_id(unique_id), interrupt)
        except Exception as error:
            logger.exception("!!! Exception during processing !!! %s", error)
            return ExecutionResult.FAILURE, self._failure(dynprompt.get_real_node_id(unique_id), error, input_data)
        run.progress.finish_progress(unique_id)
        run.executed[unique_id] = None
        return ExecutionResult.SUCCESS, None

    def _replay_cached(self, run: _PromptRun, unique_id: str, cached: CacheEntry) -> None:
        # A cached output node still reports `executed` with its stored ui, but no `executing`.
        if self.hub.client_id is not None:
            cached_ui = cached.ui or {}
            self.hub.send_sync(
                "executed",
                {
                    "node": unique_id,
                    "display_node": run.dynprompt.get_display_node_id(unique_id),
                    "output": cached_ui.get("output"),
                    "prompt_id": run.prompt_id,
                },
                self.hub.client_id,
            )
        if cached.ui is not None:
            run.ui_outputs[unique_id] = cached.ui
        run.progress.finish_progress(unique_id)
        run.results[unique_id] = cached

    def _send_executing(self, run: _PromptRun, unique_id: str) -> None:
        if self.hub.client_id is None:
            return
        display_node_id = run.dynprompt.get_display_node_id(unique_id)
        self.hub.last_node_id = display_node_id
        self.hub.send_sync(
            "executing",
            {"node": unique_id, "display_node": display_node_id, "prompt_id": run.prompt_id},
            self.hub.client_id,
        )

    async def _start_node(
        self, run: _PromptRun, unique_id: str, cls: type[Node], input_data: dict[str, list[Any]]
    ) -> _Returned | None:
        """Run a node; returns None when it continues as a pending async task."""
        self.throw_if_interrupted()
        ctx = _NodeContext(unique_id, self.options, self.device, self, run)
        kwargs = {name: values[0] for name, values in input_data.items()}
        if not cls.IS_ASYNC:
            return _split_return(await cls().execute(ctx, **kwargs))
        task = asyncio.create_task(cls().execute(ctx, **kwargs))
        # Let the task start before deciding, as ComfyUI does with `await asyncio.sleep(0)`.
        await asyncio.sleep(0)
        if task.done():
            return _split_return(task.result())
        run.pending_async[unique_id] = task
        unblock = run.execution_list.add_external_block(unique_id)
        task.add_done_callback(lambda _: unblock())
        return None

    def _input_data(
        self, run: _PromptRun, unique_id: str, node: dict[str, Any], cls: type[Node]
    ) -> dict[str, list[Any]]:
        input_types = cls.input_types(self.options)
        declared = {**input_types.get("required", {}), **input_types.get("optional", {})}
        data: dict[str, list[Any]] = {}
        for name, value in node["inputs"].items():
            if is_link(value):
                source = run.results.get(value[0]) or self.cache.get(value[0])
                if source is None or value[1] >= len(source.outputs):
                    data[name] = [None]
                    continue
                data[name] = source.outputs[value[1]]
            elif name in declared:
                data[name] = [value]
        for name, kind in input_types.get("hidden", {}).items():
            if kind == "PROMPT":
                data[name] = [run.dynprompt.original_prompt]
            elif kind == "EXTRA_PNGINFO":
                data[name] = [run.extra_data.get("extra_pnginfo")]
            elif kind == "UNIQUE_ID":
                data[name] = [unique_id]
        return data

    def _record_ui(self, run: _PromptRun, unique_id: str, ui: dict[str, Any]) -> None:
        dynprompt = run.dynprompt
        display_node_id = dynprompt.get_display_node_id(unique_id)
        run.ui_outputs[unique_id] = {
            "meta": {
                "node_id": unique_id,
                "display_node": display_node_id,
                "parent_node": dynprompt.get_parent_node_id(unique_id),
                "real_node_id": dynprompt.get_real_node_id(unique_id),
            },
            "output": ui,
        }
        if self.hub.client_id is not None:
            self.hub.send_sync(
                "executed",
                {"node": unique_id, "display_node": display_node_id, "output": ui, "prompt_id": run.prompt_id},
                self.hub.client_id,
            )

    def _expand(self, run: _PromptRun, unique_id: str, returned: _Returned) -> None:
        """Add the subgraph a node returned; the node completes once the subgraph's outputs exist."""
        assert returned.expand is not None
        new_output_ids = []
        for node_id, node in returned.expand.items():
            if run.dynprompt.has_node(node_id):
                raise RuntimeError(f"Attempt to add duplicate node {node_id}.")
            display_id = node.get("override_display_id", unique_id)
            run.dynprompt.add_ephemeral_node(node_id, node, unique_id, display_id)
            if self.registry[node["class_type"]].OUTPUT_NODE:
                new_output_ids.append(node_id)
        for node_id in new_output_ids:
            run.execution_list.add_node(node_id)
        for output in returned.outputs:
            if is_link(output):
                run.execution_list.add_strong_link(output[0], output[1], unique_id)
        run.pending_subgraph[unique_id] = returned.outputs

    def _resolve_subgraph_outputs(self, run: _PromptRun, unique_id: str) -> list[list[Any]]:
        resolved: list[list[Any]] = []
        for output in run.pending_subgraph.pop(unique_id):
            if is_link(output):
                resolved.append(list(run.results[output[0]].outputs[output[1]]))
            else:
                resolved.append([output])
        return resolved

    def _failure(self, node_id: str, error: Exception, input_data: dict[str, list[Any]] | None) -> NodeFailure:
        tips = OOM_TIPS if isinstance(error, OutOfMemoryError) else ""
        current_inputs = {}
        if input_data is not None:
            current_inputs = {name: [_format_value(v) for v in values] for name, values in input_data.items()}
        details = {
            "node_id": node_id,
            "exception_message": f"{error}\n{tips}",
            "exception_type": full_type_name(type(error)),
            "traceback": traceback.format_tb(error.__traceback__),
            "current_inputs": current_inputs,
        }
        return NodeFailure(node_id, error, details)


async def prompt_worker(queue: PromptQueue, executor: PromptExecutor, hub: SocketHub) -> None:
    """Take prompts off the queue one at a time, forever (ComfyUI's prompt_worker thread)."""
    while True:
        item, item_id = await queue.get()
        _number, prompt_id, prompt, extra_data, outputs, sensitive = item
        started = time.perf_counter()
        try:
            await executor.execute(prompt, prompt_id, {**extra_data, **sensitive}, outputs)
        except Exception:
            # A simulator bug must not kill the worker: record the prompt as failed and go on.
            logger.exception("Prompt %s crashed the simulator's executor", prompt_id)
            executor.success = False
            executor.hub.last_node_id = None
        status = ExecutionStatus(
            status_str="success" if executor.success else "error",
            completed=executor.success,
            messages=executor.status_messages,
        )
        queue.task_done(item_id, executor.history_result, status)
        if hub.client_id is not None:
            hub.send_sync("executing", {"node": None, "prompt_id": prompt_id}, hub.client_id)
        logger.info("Prompt executed in %.2f seconds", time.perf_counter() - started)
