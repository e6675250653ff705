"""The learned ETA: how long each node of a workflow should take, from the node timings of
finished jobs, and what that says about a running or waiting job's finish. An estimate, always.

History is matched most specific first: the same workflow fingerprint on the same backend, then
the same node cost signature on the same backend, then the node class (scaled by its cost inputs),
then a default that counts as knowing nothing. Statistics are medians over the most recent
timings only, because backends, drivers and models change and old timings stop being true.

The math is in pure functions over `TimingSample`s (`estimates_from_history`, `remaining_seconds`,
...); `node_estimates` is the one place that reads the database, with a short in-process cache per node
class that a job completed in the same process joins at once (`history_learn`) and that catches up
with the jobs completed elsewhere in the background once a minute (jobs.refresh_ahead), never on a
submit's or a dispatch's path; a submit reads only classes this process has never read (a new
workflow of known classes reads none).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import math
import statistics
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from itertools import chain
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.db.models import F, QuerySet
from django.utils import timezone

from comfyui.workflow import is_link
from jobs.models import Job, JobStatus, NodeTiming
from jobs.refresh_ahead import refresh_in_background
from jobs.workflow_validation import BATCH_INPUTS, FRAME_INPUTS

logger = logging.getLogger(__name__)

# What a node costs is driven by these inputs; prompts, seeds and filenames change nothing.
# `seconds` is the execution test pack's TestSleep: its input *is* its duration.
OWN_ONLY_QUANTITIES = ("steps", "seconds")
# A sampler or a decoder has no size of its own: it works at the size of the latent it is fed.
INHERITED_QUANTITIES = ("pixels", "frames", "batch")

DEFAULT_NODE_SECONDS = 1.0
# Most specific history wins once it has this many timings; below that a broader level with
# enough timings is trusted more than one or two samples that may include a slow run.
MIN_SAMPLES = 3
SAMPLES_PER_KEY = 50  # the most recent timings per history key
HISTORY_ROWS_PER_CLASS = 300  # the most recent timings fetched per (class, backend)
HISTORY_MAX_AGE = timedelta(days=60)
HISTORY_CACHE_SECONDS = 60.0
# ...but what history knew nothing of is asked again sooner: a fresh deployment's workers learn from
# each other's first jobs within seconds, not after a minute of ETAs unknown and no hand-over ahead.
HISTORY_UNKNOWN_CACHE_SECONDS = 5.0
# Past its minute, what history said is served while it is caught up in the background; older than
# this (the catch-ups keep failing, or nothing asked for it), it is read again before it is used.
HISTORY_STALE_SECONDS = 1800.0
# A class is read whole again this often (in the background): what aged past HISTORY_MAX_AGE or was
# deleted leaves it, and anything a catch-up missed comes in.
HISTORY_REREAD_SECONDS = 900.0
# A catch-up reads the jobs completed since the last one began, less this: a job's completion is
# committed, and another host's clock may run behind, within it.
CATCH_UP_OVERLAP = timedelta(seconds=60)
CATCH_UP_MAX_ROWS = 5_000
HISTORY_CACHE_ENTRIES = 4096  # node classes
# What a process starting up reads ahead (history_warm_up): the kinds of workflow among the latest
# jobs, at most this many kinds.
WARM_UP_RECENT_JOBS = 100
WARM_UP_KINDS = 20
WARM_UP_CHUNK_JOBS = 5
NODE_COSTS_MEMO_ENTRIES = 100_000
QUEUE_TOTALS_ENTRIES = 10_000

# Below this many observed steps the per-step rate still carries the node's set-up time
# (moving the model to the GPU, encoding) and extrapolates it over every remaining step.
MIN_OBSERVED_STEPS = 2
# ...or this share of them: some nodes count their progress in seconds (TestSleep), not steps.
MIN_OBSERVED_FRACTION = 0.1
# A node running past its expected duration is not done: keep a sliver of it remaining.
OVERRUN_REMAINING_FRACTION = 0.1
OVERRUN_REMAINING_MIN_SECONDS = 0.5


# --- cost signatures --------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeCost:
    """A node's class and the inputs that drive its cost (own or, for sizes, from upstream)."""

    class_type: str
    steps: float | None = None
    seconds: float | None = None
    pixels: float | None = None
    frames: float | None = None
    batch: float | None = None

    @property
    def key(self) -> str:
        parts = [self.class_type]
        for name in OWN_ONLY_QUANTITIES + INHERITED_QUANTITIES:
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={_number_text(value)}")
        return "|".join(parts)

    @property
    def work(self) -> float:
        """Relative amount of work, to scale timings of the same class at other sizes."""
        work = 1.0
        for name in ("steps", "pixels", "frames", "batch"):
            value = getattr(self, name)
            if value and value > 0:
                work *= value
        return work


def _number_text(value: float) -> str:
    # 1048576 pixels must not become "1.04858e+06": keys are compared as text.
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _number(inputs: dict[str, Any], name: str) -> float | None:
    value = inputs.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _first_number(inputs: dict[str, Any], names: Iterable[str]) -> float | None:
    for name in names:
        value = _number(inputs, name)
        if value is not None:
            return value
    return None


def _inputs(workflow: dict[str, Any], node_id: str) -> dict[str, Any]:
    node = workflow.get(node_id)
    inputs = node.get("inputs") if isinstance(node, dict) else None
    return inputs if isinstance(inputs, dict) else {}


def _class_type(workflow: dict[str, Any], node_id: str) -> str:
    node = workflow.get(node_id)
    return str(node.get("class_type", "")) if isinstance(node, dict) else ""


def _links(workflow: dict[str, Any], node_id: str) -> list[tuple[str, str, int]]:
    """(input name, upstream node id, output index), in input-name order."""
    inputs = _inputs(workflow, node_id)
    return [(name, str(inputs[name][0]), inputs[name][1]) for name in sorted(inputs) if is_link(inputs[name])]


def _own_quantities(inputs: dict[str, Any]) -> dict[str, float]:
    found: dict[str, float | None] = {
        "steps": _number(inputs, "steps"),
        "seconds": _number(inputs, "seconds"),
        "frames": _first_number(inputs, FRAME_INPUTS),
        "batch": _first_number(inputs, BATCH_INPUTS),
    }
    width, height = _number(inputs, "width"), _number(inputs, "height")
    found["pixels"] = width * height if width is not None and height is not None else None
    return {name: value for name, value in found.items() if value is not None}


def _upstream_quantities(workflow: dict[str, Any], node_id: str) -> dict[str, float]:
    """The nearest upstream size, frame count and batch: what a sampler or decoder works at."""
    found: dict[str, float] = {}
    seen = {node_id}
    frontier = deque(upstream for _, upstream, _ in _links(workflow, node_id))
    while frontier and len(found) < len(INHERITED_QUANTITIES):
        upstream = frontier.popleft()
        if upstream in seen or upstream not in workflow:
            continue
        seen.add(upstream)
        for name, value in _own_quantities(_inputs(workflow, upstream)).items():
            if name in INHERITED_QUANTITIES:
                found.setdefault(name, value)
        frontier.extend(nid for _, nid, _ in _links(workflow, upstream))
    return found


def node_cost(workflow: dict[str, Any], node_id: str) -> NodeCost:
    own = _own_quantities(_inputs(workflow, node_id))
    inherited = _upstream_quantities(workflow, node_id)
    values = {name: own.get(name) for name in OWN_ONLY_QUANTITIES}
    values.update({name: own.get(name, inherited.get(name)) for name in INHERITED_QUANTITIES})
    return NodeCost(class_type=_class_type(workflow, node_id), **values)


def node_cost_key(workflow: dict[str, Any], node_id: str) -> str:
    """The node's cost signature, e.g. "KSampler|steps=20|pixels=262144|batch=1"."""
    return node_cost(workflow, node_id).key


def workflow_fingerprint(workflow: dict[str, Any]) -> str:
    """Hash of the graph (classes and links, whatever the node ids are called) and cost inputs.

    Each node is named by what it is and what feeds it, recursively, so renumbering the nodes
    changes nothing; prompts, seeds and filenames are not part of it.
    """
    if not isinstance(workflow, dict):
        workflow = {}
    signatures = _node_signatures(workflow)
    return hashlib.sha256(json.dumps(sorted(signatures.values())).encode()).hexdigest()


def _node_signatures(workflow: dict[str, Any]) -> dict[str, str]:
    signatures: dict[str, str] = {}
    for root in workflow:
        # Iterative post-order: a long chain of nodes must not hit Python's recursion limit.
        stack: list[tuple[str, bool]] = [(str(root), False)]
        on_path: set[str] = set()
        while stack:
            node_id, expanded = stack.pop()
            if node_id in signatures:
                continue
            if expanded:
                on_path.discard(node_id)
                signatures[node_id] = _node_signature(workflow, node_id, signatures)
                continue
            on_path.add(node_id)
            stack.append((node_id, True))
            for _, upstream, _ in _links(workflow, node_id):
                if upstream in workflow and upstream not in signatures and upstream not in on_path:
                    stack.append((upstream, False))
    return signatures


def _node_signature(workflow: dict[str, Any], node_id: str, signatures: dict[str, str]) -> str:
    own = sorted((name, _number_text(value)) for name, value in _own_quantities(_inputs(workflow, node_id)).items())
    # A link into a cycle or to a missing node has no signature; ComfyUI rejects such graphs anyway.
    links = [(name, signatures.get(upstream, "?"), index) for name, upstream, index in _links(workflow, node_id)]
    text = json.dumps([_class_type(workflow, node_id), own, links])
    return hashlib.sha256(text.encode()).hexdigest()


# --- estimates from history -------------------------------------------------------------------


@dataclass(frozen=True)
class NodeEstimate:
    seconds: float  # expected duration of the node
    seconds_per_step: float | None  # for nodes that report steps
    samples: int  # how many timings it is learned from (0 = prior/default)
    source: str  # "fingerprint" | "class+backend" | "class" | "default"

    @property
    def is_default(self) -> bool:
        return self.samples == 0


DEFAULT_ESTIMATE = NodeEstimate(seconds=DEFAULT_NODE_SECONDS, seconds_per_step=None, samples=0, source="default")


@dataclass(frozen=True)
class TimingSample:
    """One node timing of a finished job, with the cost signature of that node in that job."""

    class_type: str
    backend: str
    fingerprint: str
    cost_key: str
    work: float
    duration: float
    steps: int | None
    finished_at: float  # any increasing clock; only the order matters


class TimingHistory:
    """Samples indexed by each level's key, newest first, at most SAMPLES_PER_KEY per key."""

    def __init__(self, samples: Iterable[TimingSample]) -> None:
        self.by_fingerprint: dict[tuple[str, str, str], list[TimingSample]] = defaultdict(list)
        self.by_cost_key: dict[tuple[str, str], list[TimingSample]] = defaultdict(list)
        self.by_class_backend: dict[tuple[str, str], list[TimingSample]] = defaultdict(list)
        self.by_class: dict[str, list[TimingSample]] = defaultdict(list)
        for sample in sorted(samples, key=lambda s: s.finished_at, reverse=True):
            for bucket in self._buckets(sample):
                _append_recent(bucket, sample)

    def knows_any(self) -> bool:
        return any(self.by_class.values())  # a defaultdict: a lookup leaves an empty list behind

    def of_class(self, class_type: str) -> TimingHistory:
        """What it knows of one class: every bucket belongs to one class (a cost key names its class)."""
        return self

    def learned(self, samples: Iterable[TimingSample]) -> TimingHistory:
        """A copy that knows `samples` too, each in its place by when it finished, the oldest of a
        bucket dropped past SAMPLES_PER_KEY. This history is left as it was: a request may be
        reading it on another thread while the refresher catches up."""
        copy = TimingHistory(())
        copy.by_fingerprint = defaultdict(list, self.by_fingerprint)
        copy.by_cost_key = defaultdict(list, self.by_cost_key)
        copy.by_class_backend = defaultdict(list, self.by_class_backend)
        copy.by_class = defaultdict(list, self.by_class)
        copied: set[tuple[int, Any]] = set()
        for sample in samples:
            for buckets, key in copy._bucket_keys(sample):
                if (id(buckets), key) not in copied:  # a bucket is copied before it is changed
                    buckets[key] = list(buckets.get(key, ()))
                    copied.add((id(buckets), key))
                _insert_by_time(buckets[key], sample)
        return copy

    def _buckets(self, sample: TimingSample) -> list[list[TimingSample]]:
        return [buckets[key] for buckets, key in self._bucket_keys(sample)]

    def _bucket_keys(self, sample: TimingSample) -> list[tuple[dict[Any, list[TimingSample]], Any]]:
        return [
            (self.by_fingerprint, (sample.fingerprint, sample.backend, sample.cost_key)),
            (self.by_cost_key, (sample.backend, sample.cost_key)),
            (self.by_class_backend, (sample.class_type, sample.backend)),
            (self.by_class, sample.class_type),
        ]


def _append_recent(bucket: list[TimingSample], sample: TimingSample) -> None:
    if len(bucket) < SAMPLES_PER_KEY:
        bucket.append(sample)


def _insert_by_time(bucket: list[TimingSample], sample: TimingSample) -> None:
    """Into a bucket kept newest first: after those that finished no later, none past SAMPLES_PER_KEY."""
    at = bisect.bisect_right(bucket, -sample.finished_at, key=lambda known: -known.finished_at)
    if at < SAMPLES_PER_KEY:
        bucket.insert(at, sample)
        del bucket[SAMPLES_PER_KEY:]


def _seconds_per_step(samples: Sequence[TimingSample]) -> float | None:
    rates = [s.duration / s.steps for s in samples if s.steps]
    return statistics.median(rates) if rates else None


def _estimate_same_cost(samples: Sequence[TimingSample], source: str) -> NodeEstimate:
    seconds = statistics.median(s.duration for s in samples)
    return NodeEstimate(seconds, _seconds_per_step(samples), len(samples), source)


def _estimate_scaled(samples: Sequence[TimingSample], cost: NodeCost) -> NodeEstimate:
    # Other sizes of the same class: time per unit of work (steps x pixels x frames x batch).
    seconds = statistics.median(s.duration / s.work for s in samples) * cost.work
    per_step = seconds / cost.steps if cost.steps else _seconds_per_step(samples)
    return NodeEstimate(seconds, per_step, len(samples), "class")


class ClassHistories:
    """Each class's own TimingHistory, for a set of classes; what `estimates_from_history` reads
    from a process's per-class cache (one history would mean merging them)."""

    def __init__(self, histories: dict[str, TimingHistory]) -> None:
        self._histories = histories

    def of_class(self, class_type: str) -> TimingHistory:
        return self._histories.get(class_type) or _NOTHING_KNOWN


_NOTHING_KNOWN = TimingHistory(())


def _node_estimate(
    histories: TimingHistory | ClassHistories, cost: NodeCost, *, backend: str, fingerprint: str
) -> NodeEstimate:
    history = histories.of_class(cost.class_type)
    levels: list[tuple[list[TimingSample], str]] = [
        (history.by_fingerprint.get((fingerprint, backend, cost.key), []), "fingerprint"),
        (history.by_cost_key.get((backend, cost.key), []), "class+backend"),
        # This backend's speed first; other backends' timings of the class when it has none.
        (history.by_class_backend.get((cost.class_type, backend), []), "class"),
        (history.by_class.get(cost.class_type, []), "class"),
    ]
    chosen = next(((s, src) for s, src in levels if len(s) >= MIN_SAMPLES), None)
    chosen = chosen or next(((s, src) for s, src in levels if s), None)
    if chosen is None:
        return DEFAULT_ESTIMATE
    samples, source = chosen
    if source == "class":
        return _estimate_scaled(samples, cost)
    return _estimate_same_cost(samples, source)


def estimates_from_history(
    history: TimingHistory | ClassHistories, *, backend: str, workflow: dict[str, Any], nodes: Iterable[str]
) -> dict[str, NodeEstimate]:
    """The pure part of `node_estimates`: the same answer from timings given directly."""
    fingerprint = workflow_fingerprint(workflow)
    return {
        node_id: _node_estimate(history, node_cost(workflow, node_id), backend=backend, fingerprint=fingerprint)
        for node_id in nodes
    }


# --- reading history from the database --------------------------------------------------------

# Each node class's history, read once and then kept: every bucket of a TimingHistory belongs to
# one class, so a workflow's history is its classes' together, and a workflow of classes read
# before (for another workflow, or at the process's start) needs no read at all. Once a minute the
# timings of the jobs completed since are read for every class held, in one query
# (`_history_catch_up`); a class is read whole again only every HISTORY_REREAD_SECONDS, when
# what aged past HISTORY_MAX_AGE or was deleted leaves it.


@dataclass(frozen=True)
class _Held:
    """A class's history as this process holds it. Replaced whole, never changed in place: a
    request reading it while the refresher catches up sees the one or the other."""

    history: TimingHistory
    read_at: float  # time.monotonic() of its last whole read
    # Its timings of jobs completed inside the catch-up's window, by (job id, node id): a catch-up
    # that reads them again does not learn them twice.
    recent: dict[tuple[Any, str], datetime]


_history_cache: dict[str, _Held] = {}
_history_lock = threading.Lock()  # one writer at a time: a catch-up, a whole read, a job learned here
# When the last catch-up began, by this process's clock and by the wall clock (None: none yet; the
# wall clock's is first when the first class was read whole).
_caught_up_at: float | None = None
_caught_up_through: datetime | None = None
# Finished jobs never change, so a timed node's cost signature is computed once per process.
_node_costs_memo: dict[tuple[Any, str], NodeCost] = {}
_node_costs_lock = threading.Lock()
_queue_totals: dict[tuple[str, str], tuple[float, float | None]] = {}

_TIMING_FIELDS = ("job_id", "node_id", "class_type", "backend", "fingerprint", "duration", "steps", "finished_at")
# ...and when the timing's job completed (what a catch-up reads from, and knows repeats by).
_TIMING_ROW_FIELDS = (*_TIMING_FIELDS, "job__finished_at")


def eta_cache_clear() -> None:
    global _caught_up_at, _caught_up_through
    with _history_lock:
        _history_cache.clear()
        _caught_up_at = _caught_up_through = None
    _node_costs_memo.clear()
    _queue_totals.clear()


def node_estimates(backend: str, workflow: dict[str, Any], nodes: set[str]) -> dict[str, NodeEstimate]:
    """Expected duration of each of `nodes`, learned from the timings of completed jobs."""
    classes = frozenset(_class_type(workflow, n) for n in nodes)
    return estimates_from_history(_history_for(classes), backend=backend, workflow=workflow, nodes=nodes)


def _history_for(classes: frozenset[str]) -> ClassHistories:
    """What history says of `classes`, class by class: each read once, then kept. Once older than
    HISTORY_CACHE_SECONDS it is still served while a thread catches up (jobs.refresh_ahead), so no
    read lands on a submit or a free GPU's dispatch but the first of a class in this process and one
    older than HISTORY_STALE_SECONDS (its catch-ups kept failing, or nothing asked). When history
    knew nothing of any of them, they are read again here after HISTORY_UNKNOWN_CACHE_SECONDS."""
    now = time.monotonic()
    found: dict[str, _Held] = {}
    unread: list[str] = []
    for class_type in classes:
        held = _history_cache.get(class_type)
        if held is None or now - _fresh_at(held) >= HISTORY_STALE_SECONDS:
            unread.append(class_type)
        else:
            found[class_type] = held
    if found and not any(held.history.knows_any() for held in found.values()):
        unread += [
            class_type for class_type, held in found.items() if now - _fresh_at(held) >= HISTORY_UNKNOWN_CACHE_SECONDS
        ]
    for class_type, held in found.items():
        if class_type in unread:
            continue
        if now - held.read_at >= HISTORY_REREAD_SECONDS:
            refresh_in_background(("eta history", class_type), partial(_histories_read, [class_type]))
        elif now - _fresh_at(held) >= HISTORY_CACHE_SECONDS:
            refresh_in_background(("eta history", "catch-up"), _history_catch_up)
    histories = {class_type: held.history for class_type, held in found.items()}
    if unread:
        histories.update(_histories_read(unread))
    return ClassHistories(histories)


def _fresh_at(held: _Held) -> float:
    """When what is held of a class was last brought up to date: read whole, or caught up."""
    return held.read_at if _caught_up_at is None else max(held.read_at, _caught_up_at)


def history_warm_up() -> None:
    """Have the refresher read history for the node classes of the kinds of workflow submitted
    lately, so a process that just started does not read it on its first submit of each. Returns
    at once; a database that is down only logs."""
    refresh_in_background(("eta history", "warm-up"), _history_warm_up)


def _history_warm_up() -> None:
    recent = Job.objects.order_by("-created_at").values_list("workflow", flat=True)[:WARM_UP_RECENT_JOBS]
    kinds: list[frozenset[str]] = []
    # A few workflows at a time (each up to WORKFLOW_MAX_BYTES): not a hundred of them in memory at once.
    for workflow in recent.iterator(chunk_size=WARM_UP_CHUNK_JOBS):
        if not isinstance(workflow, dict) or not workflow:
            continue
        classes = frozenset(_class_type(workflow, str(n)) for n in workflow)
        if classes not in kinds:
            kinds.append(classes)
    wanted = {class_type for classes in kinds[:WARM_UP_KINDS] for class_type in classes}
    _histories_read(sorted(wanted - _history_cache.keys()))


def _histories_read(classes: Sequence[str]) -> dict[str, TimingHistory]:
    """Read `classes` whole: the latest timings of each (`_recent_rows`)."""
    global _caught_up_through
    read_at, wall = time.monotonic(), timezone.now()
    rows = _recent_rows(frozenset(classes))
    found: dict[str, list[tuple[tuple[Any, ...], TimingSample]]] = {class_type: [] for class_type in classes}
    for row, sample in zip(rows, _samples(rows), strict=True):  # the jobs' workflows read at once
        found[sample.class_type].append((row, sample))
    held: dict[str, _Held] = {}
    with _history_lock:
        if _caught_up_through is None:
            _caught_up_through = wall  # the first catch-up reads what completed since
        window = _caught_up_through - CATCH_UP_OVERLAP
        for class_type, timings in found.items():
            recent = {(row[0], row[1]): row[8] for row, _ in timings if row[8] is not None and row[8] >= window}
            held[class_type] = _Held(TimingHistory(sample for _, sample in timings), read_at, recent)
        if len(_history_cache) + len(held) > HISTORY_CACHE_ENTRIES:
            _history_cache.clear()
        _history_cache.update(held)
    return {class_type: one.history for class_type, one in held.items()}


def _completed_timings() -> QuerySet[NodeTiming]:
    # Interrupted, failed and superseded attempts stop nodes midway: their timings lie.
    return NodeTiming.objects.filter(job__status=JobStatus.COMPLETED, attempt=F("job__attempt"))


def _recent_rows(classes: frozenset[str]) -> list[tuple[Any, ...]]:
    """The latest timings of each class on each configured backend, and on any backend (what the
    class-level estimate reads when a backend has none): one bounded query each, which an index
    on the class answers at any size of history. (A window over every timing of the classes took
    6 s at a million jobs.) Each row: _TIMING_FIELDS, then when its job finished."""
    rows: dict[tuple[Any, str], tuple[Any, ...]] = {}
    since = timezone.now() - HISTORY_MAX_AGE
    for class_type in sorted(classes):
        for backend in [*settings.COMFYUI_BACKENDS, None]:
            timings = _completed_timings().filter(class_type=class_type, finished_at__gte=since)
            if backend is not None:
                timings = timings.filter(backend=backend)
            for row in timings.order_by("-finished_at").values_list(*_TIMING_ROW_FIELDS)[:HISTORY_ROWS_PER_CLASS]:
                rows[(row[0], row[1])] = row  # the same timing, found for its backend and for any
    return list(rows.values())


def _history_catch_up() -> None:
    """Bring every class held here up to date with the jobs completed since the last catch-up (less
    CATCH_UP_OVERLAP): one query over those jobs' timings, which the index on when a job finished
    answers at any size of history, in place of reading each class whole again (at a million jobs
    that was 12-27 ms a class, 33-53 ms of CPU for a Stable Diffusion graph's classes, once a
    minute in every web process and GPU worker, beside their requests and dispatches)."""
    global _caught_up_at, _caught_up_through
    started, wall = time.monotonic(), timezone.now()
    classes = sorted(_history_cache)
    since = _caught_up_through
    if not classes or since is None:
        return
    completed = _completed_timings().filter(class_type__in=classes, job__finished_at__gte=since - CATCH_UP_OVERLAP)
    rows = list(completed.order_by("job__finished_at").values_list(*_TIMING_ROW_FIELDS)[: CATCH_UP_MAX_ROWS + 1])
    if len(rows) > CATCH_UP_MAX_ROWS:  # more completed than is worth merging (a long outage): read them whole
        _histories_read(classes)
    else:
        new = [row for row in rows if not _known(row)]
        learned: dict[str, list[tuple[tuple[Any, ...], TimingSample]]] = defaultdict(list)
        for row, sample in zip(new, _samples(new), strict=True):  # a job's workflow is read once, here
            learned[row[2]].append((row, sample))
        keep = wall - CATCH_UP_OVERLAP  # what the next catch-up reads again
        with _history_lock:
            for class_type in classes:
                held = _history_cache.get(class_type)
                if held is not None:
                    _history_cache[class_type] = _with_learned(held, learned.get(class_type, []), keep=keep)
    with _history_lock:
        _caught_up_at, _caught_up_through = started, wall


def _known(row: tuple[Any, ...]) -> bool:
    held = _history_cache.get(row[2])
    return held is None or (row[0], row[1]) in held.recent


def _with_learned(
    held: _Held, learned: Sequence[tuple[tuple[Any, ...], TimingSample]], *, keep: datetime | None
) -> _Held:
    """`held` and the timings `learned` (each with its row) it did not know yet; `keep`: forget the
    timings of jobs completed before it (no catch-up reads them again)."""
    fresh = [(row, sample) for row, sample in learned if (row[0], row[1]) not in held.recent]
    recent = held.recent if keep is None else {key: at for key, at in held.recent.items() if at >= keep}
    if fresh:
        recent = {**recent, **{(row[0], row[1]): row[8] for row, _ in fresh if row[8] is not None}}
    history = held.history.learned(sample for _, sample in fresh) if fresh else held.history
    return _Held(history, held.read_at, recent)


def _samples(rows: Sequence[tuple[Any, ...]], *, workflows: dict[Any, Any] | None = None) -> list[TimingSample]:
    """Rows that begin with _TIMING_FIELDS as samples, in their order; `workflows`: of some of
    their jobs, by id, at hand (the others' are read)."""
    costs = _node_costs({(row[0], row[1]) for row in rows}, workflows or {})
    samples = []
    for row in rows:
        job_id, node_id, class_type, backend, fingerprint, duration, steps, finished_at = row[:8]
        cost = costs.get((job_id, node_id)) or NodeCost(class_type=class_type)
        samples.append(
            TimingSample(
                class_type, backend, fingerprint, cost.key, cost.work, duration, steps, finished_at.timestamp()
            )
        )
    return samples


def history_learn(job: Job, *, timed: Sequence[NodeTiming] | None = None) -> None:
    """Learn from a job that just completed in this process, now: its node timings join the
    histories of their classes already read here, so the next job of the same kind knows them
    without reading history again (which is caught up once a minute, off the path to the next prompt).
    `timed`: the attempt's node timings as its tracker made them, when it followed the whole attempt;
    else they are read. Either way learned with the job's own workflow, not read again (a GPU
    worker cleans up after a job before it can take the next: 2 queries less)."""
    if job.status != JobStatus.COMPLETED or not _history_cache:
        return
    if timed is not None:
        rows = [tuple(getattr(timing, name) for name in _TIMING_FIELDS) for timing in timed]
    else:
        try:
            rows = list(NodeTiming.objects.filter(job=job, attempt=job.attempt).values_list(*_TIMING_FIELDS))
        except DatabaseError:  # learned at the next catch-up instead; the job is done either way
            logger.warning("job %s: its node timings were not learned at once", job.id, exc_info=True)
            return
    rows = [(*row, job.finished_at) for row in rows]  # the catch-up that reads them again knows them
    learned: dict[str, list[tuple[tuple[Any, ...], TimingSample]]] = defaultdict(list)
    for row, sample in zip(rows, _samples(rows, workflows={job.pk: job.workflow}), strict=True):
        learned[sample.class_type].append((row, sample))
    with _history_lock:
        for class_type, found in learned.items():
            held = _history_cache.get(class_type)  # a class not held here is read whole when asked for
            if held is not None:
                _history_cache[class_type] = _with_learned(held, found, keep=None)


def _node_costs(nodes: set[tuple[Any, str]], workflows: dict[Any, Any]) -> dict[tuple[Any, str], NodeCost]:
    """The cost signature of each (job id, node id): NodeTiming keeps none of its own, so it is
    derived from the job's workflow, for the timed nodes only (a cold read of history at a million
    jobs spent 45 of its 85 ms on every node of 300 workflows, where 300 nodes were asked for)."""
    # Request threads and history refreshes share the memo: it is read and changed under a lock.
    with _node_costs_lock:
        known = {key: _node_costs_memo[key] for key in nodes if key in _node_costs_memo}
    missing = nodes - known.keys()
    if missing:
        wanted: dict[Any, list[str]] = defaultdict(list)
        for job_id, node_id in missing:
            wanted[job_id].append(node_id)
        at_hand = [(job_id, workflows[job_id]) for job_id in wanted if job_id in workflows]
        to_read = [job_id for job_id in wanted if job_id not in workflows]
        read = Job.objects.filter(pk__in=to_read).values_list("id", "workflow").iterator() if to_read else iter(())
        for job_id, workflow in chain(at_hand, read):
            graph = workflow if isinstance(workflow, dict) else {}
            for node_id in wanted[job_id]:
                if node_id in graph:
                    known[(job_id, node_id)] = node_cost(graph, node_id)
        with _node_costs_lock:
            if len(_node_costs_memo) + len(missing) > NODE_COSTS_MEMO_ENTRIES:
                _node_costs_memo.clear()
            _node_costs_memo.update({key: known[key] for key in missing if key in known})
    return known


# --- what the estimates say about a job -------------------------------------------------------


def _all_default(estimates: dict[str, NodeEstimate]) -> bool:
    return all(e.is_default for e in estimates.values())


def _current_remaining(
    estimate: NodeEstimate,
    *,
    step_value: float | None,
    step_max: float | None,
    started_seconds_ago: float | None,
) -> float:
    elapsed = max(started_seconds_ago or 0.0, 0.0)
    floor = max(estimate.seconds * OVERRUN_REMAINING_FRACTION, OVERRUN_REMAINING_MIN_SECONDS)
    expected = max(estimate.seconds - elapsed, floor)
    if not (step_max and step_value is not None and step_value >= MIN_OBSERVED_STEPS and elapsed > 0):
        return expected
    # This run's own pace: the same sampler on the same GPU, right now.
    observed = elapsed / step_value * max(step_max - step_value, 0.0)
    if estimate.is_default:
        return observed
    # Elapsed time includes the node's set-up before its first step (the model moved to the GPU),
    # which the observed rate spreads over the steps done and so overestimates early on. Trusting
    # it in proportion to the steps done keeps that error below the set-up time itself, and still
    # follows a run that is slower or faster than its history.
    trust = min(step_value / step_max, 1.0)
    return trust * observed + (1.0 - trust) * expected


def remaining_seconds(
    estimates: dict[str, NodeEstimate],
    *,
    to_run: set[str],
    done: set[str],
    cached: set[str],
    current_node: str | None,
    step_value: float | None,
    step_max: float | None,
    current_started_seconds_ago: float | None,
    by_pace: bool = False,
) -> float | None:
    """Expected seconds until the prompt finishes; None when no history informs any node.

    `by_pace`: stricter, for a decision that binds work (the hand-over ahead), as far as this run's
    own pace shows: the node running now at its observed rate when it reports steps, otherwise at
    history's estimate only until it has outrun it, and every node after it known to history; None
    when unsure.
    """
    if by_pace:
        return _remaining_by_pace(
            estimates,
            pending=to_run - done - cached - {current_node},
            current=current_node if current_node in to_run - done - cached else None,
            step_value=step_value,
            step_max=step_max,
            elapsed=max(current_started_seconds_ago or 0.0, 0.0),
        )
    if not estimates or _all_default(estimates):
        return None
    pending = to_run - done - cached - {current_node}
    remaining = sum(estimates.get(n, DEFAULT_ESTIMATE).seconds for n in pending)
    if current_node is not None and current_node in to_run and current_node not in done | cached:
        remaining += _current_remaining(
            estimates.get(current_node, DEFAULT_ESTIMATE),
            step_value=step_value,
            step_max=step_max,
            started_seconds_ago=current_started_seconds_ago,
        )
    return remaining


def pace_observed(step_value: float | None, step_max: float | None) -> bool:
    """Whether a node has reported enough of its progress to show its own pace."""
    if not step_max or step_max <= 0 or step_value is None or step_value <= 0:
        return False
    return step_value >= min(MIN_OBSERVED_STEPS, step_max * MIN_OBSERVED_FRACTION)


def _remaining_by_pace(
    estimates: dict[str, NodeEstimate],
    *,
    pending: set[str],
    current: str | None,
    step_value: float | None,
    step_max: float | None,
    elapsed: float,
) -> float | None:
    if any(estimates.get(n, DEFAULT_ESTIMATE).is_default for n in pending):
        return None
    remaining = sum(estimates[n].seconds for n in pending)
    if current is None:
        return remaining
    if pace_observed(step_value, step_max) and step_value and step_max and elapsed > 0:
        return remaining + elapsed / step_value * max(step_max - step_value, 0.0)
    estimate = estimates.get(current, DEFAULT_ESTIMATE)
    if estimate.is_default or elapsed > estimate.seconds:
        return None
    return remaining + estimate.seconds - elapsed


def node_weights(estimates: dict[str, NodeEstimate]) -> dict[str, float]:
    """Each node's share of overall progress: its expected seconds, or equal when nothing is known."""
    if _all_default(estimates):
        return {node_id: 1.0 for node_id in estimates}
    return {node_id: estimate.seconds for node_id, estimate in estimates.items()}


def expected_total_seconds(backend: str, workflow: dict[str, Any]) -> float | None:
    """Expected run time of the whole workflow on the backend; None when nothing is known.

    Counts every node: which classes are outputs (and so which nodes ComfyUI will run) and
    which nodes its cache will serve are only known once the job runs.
    """
    if not isinstance(workflow, dict) or not workflow:
        return None
    estimates = node_estimates(backend, workflow, {str(n) for n in workflow})
    if _all_default(estimates):
        return None
    return sum(e.seconds for e in estimates.values())


def queue_eta_seconds(
    backend: str, jobs_ahead: list[tuple[str, dict]], running_remaining: float | None
) -> float | None:
    """Seconds until a waiting job can start: what runs now plus each job ahead of it.

    `jobs_ahead` is (job id, workflow) in queue order; a job's expected total is cached for a
    minute under its id, so the id must name that one workflow. `running_remaining` is the running job's
    estimated remaining seconds, 0.0 when nothing runs; None (a job runs, nobody knows for how
    long) makes the answer None. The waiting job's own run time is not included.
    """
    return queue_wait_seconds(backend, jobs_ahead, running_remaining)[-1]


def queue_wait_seconds(
    backend: str, queue: Sequence[tuple[str, dict]], running_remaining: float | None
) -> list[float | None]:
    """`queue_eta_seconds` for every place at once: item n is the wait of a job with the first n
    jobs of `queue` ahead of it, summed along the queue (n = 0 .. len(queue)).

    Once one job's run time is unknown, so is the wait of every job behind it.
    """
    waits: list[float | None] = [None if running_remaining is None else max(running_remaining, 0.0)]
    for job_id, workflow in queue:
        before = waits[-1]
        expected = None if before is None else _job_expected_total(backend, job_id, workflow)
        waits.append(None if before is None or expected is None else before + expected)
    return waits


def _job_expected_total(backend: str, job_id: str, workflow: dict[str, Any]) -> float | None:
    # Every waiting job's ETA walks the jobs ahead of it: a page of N waiting jobs asks about
    # N^2/2 workflows. A job's workflow never changes, so its expected total is kept a while.
    key = (backend, job_id)
    cached = _queue_totals.get(key)
    if cached is not None and time.monotonic() - cached[0] < HISTORY_CACHE_SECONDS:
        return cached[1]
    expected = expected_total_seconds(backend, workflow)
    if len(_queue_totals) >= QUEUE_TOTALS_ENTRIES:
        _queue_totals.clear()
    _queue_totals[key] = (time.monotonic(), expected)
    return expected
