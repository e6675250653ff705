"""Realistic job history for scale tests and demos: `python manage.py generate_history --jobs 1000000`.

Jobs over the last ~90 days (busier in working hours), image 70 % / video 20 % / upscale 10 % on
gpu1..gpu4, mostly completed, failures spread over the categories with the messages ComfyUI really
gives, some cancelled; queue waits, run times, node timings and attempts to match. Rows are written
with COPY on PostgreSQL and bulk_create elsewhere, in batches, so a million jobs take minutes.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import queue
import random
import uuid
from bisect import bisect
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import accumulate
from typing import Any, cast

from django.contrib.auth import get_user_model
from django.db import connection, models, transaction

from jobs.models import FailureCategory as FC
from jobs.models import Job, JobAttempt, JobStatus, NodeTiming

BACKENDS = ("gpu1", "gpu2", "gpu3", "gpu4")
JOB_TYPES = (("image", 0.70), ("video", 0.20), ("upscale", 0.10))
# Video jobs go to the big cards more often; gpu4 is the small card that runs out of memory.
BACKEND_WEIGHTS = {"image": (30, 30, 25, 15), "video": (15, 20, 35, 30), "upscale": (25, 25, 25, 25)}
STATUS_WEIGHTS = ((JobStatus.COMPLETED, 88.5), (JobStatus.FAILED, 8.0), (JobStatus.CANCELLED, 3.5))
FAILURE_WEIGHTS = {
    FC.OUT_OF_MEMORY: 22,
    FC.NODE_ERROR: 20,
    FC.MISSING_MODEL: 12,
    FC.VALIDATION: 10,
    FC.MISSING_NODE: 5,
    FC.COMFYUI_UNREACHABLE: 6,
    FC.WORKER_LOST: 5,
    FC.TIMED_OUT: 3,
    FC.LOST: 4,
    FC.STUCK: 3,
    FC.INTERRUPTED: 5,
    FC.OUTPUT_MISSING: 5,
}
# Failures ComfyUI reports before anything runs (the prompt is refused at submission).
REFUSED = frozenset({FC.VALIDATION, FC.MISSING_NODE, FC.MISSING_MODEL})
HOUR_WEIGHTS = (2, 1, 1, 1, 1, 2, 3, 5, 8, 10, 10, 10, 9, 10, 10, 10, 10, 9, 7, 6, 5, 4, 3, 2)

NODES = {
    "image": (
        ("4", "CheckpointLoaderSimple"),
        ("6", "CLIPTextEncode"),
        ("7", "CLIPTextEncode"),
        ("5", "EmptyLatentImage"),
        ("3", "KSampler"),
        ("8", "VAEDecode"),
        ("9", "SaveImage"),
    ),
    "video": (
        ("4", "CheckpointLoaderSimple"),
        ("6", "CLIPTextEncode"),
        ("7", "CLIPTextEncode"),
        ("5", "EmptyLatentImage"),
        ("3", "KSampler"),
        ("8", "VAEDecode"),
        ("10", "VHS_VideoCombine"),
    ),
    "upscale": (("1", "LoadImage"), ("2", "UpscaleModelLoader"), ("3", "ImageUpscaleWithModel"), ("4", "SaveImage")),
}
SAMPLER = {"image": "KSampler", "video": "KSampler", "upscale": "ImageUpscaleWithModel"}
LOADERS = frozenset({"CheckpointLoaderSimple", "UpscaleModelLoader"})
# Typical seconds of the nodes other than the sampler (low, high, or (low, high) scaled for video).
FIXED_SECONDS = {
    "CheckpointLoaderSimple": (2.0, 7.0),
    "CLIPTextEncode": (0.05, 0.4),
    "EmptyLatentImage": (0.01, 0.05),
    "VAEDecode": (0.8, 3.0),
    "SaveImage": (0.1, 0.6),
    "LoadImage": (0.05, 0.3),
    "UpscaleModelLoader": (0.5, 2.5),
    "VHS_VideoCombine": (15.0, 90.0),
}
VIDEO_VAE_SECONDS = (30.0, 150.0)

CHECKPOINTS = ("animagine-xl-3.1.safetensors", "anything-v5.safetensors", "counterfeit-v3.safetensors")
TRACEBACK_OOM = [
    '  File "/comfyui/execution.py", line 323, in execute\n',
    "    output_data, output_ui, has_subgraph = get_output_data("
    "obj, input_data_all, execution_block_cb=execution_block_cb)\n",
    '  File "/comfyui/comfy/sample.py", line 43, in sample\n',
    "    samples = sampler.sample(noise, positive, negative, cfg=cfg, latent_image=latent_image)\n",
    '  File "/venv/lib/python3.11/site-packages/torch/nn/functional.py", line 2573, in group_norm\n',
    "    return torch.group_norm(input, num_groups, weight, bias, eps, torch.backends.cudnn.enabled)\n",
]
TRACEBACK_NODE = [
    '  File "/comfyui/execution.py", line 323, in execute\n',
    "    output_data, output_ui, has_subgraph = get_output_data(obj, input_data_all)\n",
    '  File "/comfyui/custom_nodes/ComfyUI-VideoHelperSuite/videohelpersuite/nodes.py", line 211, in combine_video\n',
    '    raise Exception("An error occurred in the ffmpeg subprocess")\n',
]


def _message(category: str, job_type: str, rng: random.Random) -> tuple[str, dict[str, Any]]:
    """An error message and details as the tracker records them for this kind of failure."""
    if category == FC.OUT_OF_MEMORY:
        gib = rng.choice(("1.50", "2.00", "2.50", "3.38", "4.00", "6.75"))
        free = rng.choice(("512.00 MiB", "1.21 GiB", "780.25 MiB"))
        message = (
            f"KSampler #3: OutOfMemoryError: CUDA out of memory. Tried to allocate {gib} GiB. "
            f"GPU 0 has a total capacity of 23.65 GiB of which {free} is free."
        )
        return message, {
            "node_id": "3",
            "node_type": "KSampler",
            "exception_type": "torch.OutOfMemoryError",
            "traceback": TRACEBACK_OOM,
        }
    if category == FC.NODE_ERROR:
        if job_type == "video":
            return (
                "VHS_VideoCombine #10: Exception: An error occurred in the ffmpeg subprocess",
                {
                    "node_id": "10",
                    "node_type": "VHS_VideoCombine",
                    "exception_type": "Exception",
                    "traceback": TRACEBACK_NODE,
                },
            )
        choice = rng.choice(
            (
                (
                    "8",
                    "VAEDecode",
                    "RuntimeError",
                    "Given groups=1, weight of size [512, 4, 3, 3], expected input[1, 16, 128, 128] "
                    "to have 4 channels, but got 16 channels instead",
                ),
                ("3", "KSampler", "RuntimeError", "mat1 and mat2 shapes cannot be multiplied (154x2048 and 768x320)"),
                (
                    "1",
                    "LoadImage",
                    "FileNotFoundError",
                    "[Errno 2] No such file or directory: 'input/keyframe_0042.png'",
                ),
            )
        )
        node_id, node_type, exc, text = choice
        return (
            f"{node_type} #{node_id}: {exc}: {text}",
            {"node_id": node_id, "node_type": node_type, "exception_type": exc, "traceback": TRACEBACK_OOM[:2]},
        )
    simple: dict[str, Callable[[], str]] = {
        FC.MISSING_MODEL: lambda: (
            "Prompt outputs failed validation: CheckpointLoaderSimple: Value not in list: "
            f"ckpt_name: '{rng.choice(CHECKPOINTS)}' not in []"
        ),
        FC.VALIDATION: lambda: rng.choice(
            (
                "Prompt outputs failed validation: KSampler: Required input is missing: positive",
                "Prompt outputs failed validation: EmptyLatentImage: Value 9000 bigger than max of 8192: width",
            )
        ),
        FC.MISSING_NODE: lambda: rng.choice(
            (
                "Cannot execute because node IPAdapterAdvanced does not exist.",
                "Cannot execute because node ADE_AnimateDiffLoaderWithContext does not exist.",
            )
        ),
        FC.COMFYUI_UNREACHABLE: lambda: "ComfyUI unreachable for 60 s: connection refused",
        FC.WORKER_LOST: lambda: "the worker running the job was lost (process killed); not retried after 3 deliveries",
        FC.TIMED_OUT: lambda: "the job ran longer than JOB_MAX_SECONDS (3600 s)",
        FC.LOST: lambda: "the prompt vanished from ComfyUI's queue and history (ComfyUI restarted?)",
        FC.STUCK: lambda: "no progress from ComfyUI for 900 s",
        FC.INTERRUPTED: lambda: "interrupted in KSampler #3 by someone else",
        FC.OUTPUT_MISSING: lambda: "ComfyUI listed an output that /view does not serve: ComfyUI_00042_.png",
    }
    return simple[category](), {}


def _workflow(job_type: str) -> dict[str, Any]:
    return {node_id: {"class_type": class_type, "inputs": {}} for node_id, class_type in NODES[job_type]}


class Weighted:
    """`random.choices(items, weights)[0]` with the cumulative weights summed once, not per pick.

    It draws the same random number and picks the same item as `random.choices`, so a seed makes the
    same history as before; a million jobs pick seven times each.
    """

    def __init__(self, items: Iterable[Any], weights: Iterable[float]) -> None:
        self.items = list(items)
        self.cumulative = list(accumulate(weights))
        self.total = self.cumulative[-1] + 0.0

    def pick(self, rng: random.Random) -> Any:
        return self.items[bisect(self.cumulative, rng.random() * self.total, 0, len(self.items) - 1)]


HOURS = Weighted(range(24), HOUR_WEIGHTS)
TYPES = Weighted([t for t, _ in JOB_TYPES], [w for _, w in JOB_TYPES])
BACKEND_PICKS = {job_type: Weighted(BACKENDS, weights) for job_type, weights in BACKEND_WEIGHTS.items()}
STATUSES = Weighted([s for s, _ in STATUS_WEIGHTS], [w for _, w in STATUS_WEIGHTS])
PRIORITIES = Weighted((5, 7, 9, 2), (80, 12, 3, 5))


@dataclass
class Batch:
    jobs: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    timings: list[dict[str, Any]] = field(default_factory=list)


class HistoryGenerator:
    """Makes rows (attname -> value dicts) for jobs, their attempts and node timings."""

    def __init__(self, *, now: datetime, days: int, user_ids: list[int], seed: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.now = now
        self.days = days
        self.user_ids = user_ids
        # A few artists submit most of the work.
        self.users = Weighted(user_ids, [1 / (rank + 1) for rank in range(len(user_ids))]) if user_ids else None
        self.workflows = {job_type: _workflow(job_type) for job_type, _ in JOB_TYPES}
        self.fingerprints = {
            (job_type, steps): hashlib.sha1(f"{job_type}:{steps}".encode()).hexdigest()[:16]
            for job_type, _ in JOB_TYPES
            for steps in (20, 25, 30)
        }

    def _uuid(self) -> uuid.UUID:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)

    def _created_at(self) -> datetime:
        rng = self.rng
        # Slow growth over the period: later days are a little busier.
        day = int(self.days * (rng.random() ** 0.85))
        hour = HOURS.pick(rng)
        offset = timedelta(days=self.days - 1 - day, hours=24 - hour) - timedelta(seconds=rng.random() * 3600)
        return self.now - offset

    def _wait(self, job_type: str) -> float:
        rng = self.rng
        wait = rng.expovariate(1 / (45 if job_type == "video" else 12))
        if rng.random() < 0.04:  # someone queued a batch of videos ahead
            wait += rng.uniform(300, 1800)
        return wait

    def _run(self, job_type: str) -> float:
        rng = self.rng
        if job_type == "video":
            return rng.uniform(8 * 60, 40 * 60)
        if job_type == "upscale":
            return rng.uniform(10, 90)
        return rng.uniform(30, 60) * (rng.uniform(1.2, 2.5) if rng.random() < 0.03 else 1.0)

    def _timings(self, job: dict[str, Any], run: float, stop_at: str | None) -> list[dict[str, Any]]:
        """Sequential timings of the executed nodes; a cached loader runs no code and has none."""
        rng = self.rng
        job_type = job["job_type"]
        cached = set(job["cached_nodes"])
        nodes = [(node_id, cls) for node_id, cls in NODES[job_type] if node_id not in cached]
        seconds = {}
        for node_id, cls in nodes:
            if cls == SAMPLER[job_type]:
                continue
            low, high = VIDEO_VAE_SECONDS if (job_type == "video" and cls == "VAEDecode") else FIXED_SECONDS[cls]
            seconds[node_id] = rng.uniform(low, high)
        sampler_id = next(node_id for node_id, cls in nodes if cls == SAMPLER[job_type])
        seconds[sampler_id] = max(run - sum(seconds.values()), 1.0)
        timings, moment = [], job["started_at"]
        steps = job["steps"]
        for node_id, cls in nodes:
            if node_id == stop_at:
                break
            finished = moment + timedelta(seconds=seconds[node_id])
            timings.append(
                {
                    "job_id": job["id"],
                    "attempt": job["attempt"],
                    "node_id": node_id,
                    "class_type": cls,
                    "backend": job["backend"],
                    "fingerprint": job["fingerprint"],
                    "started_at": moment,
                    "finished_at": finished,
                    "duration": seconds[node_id],
                    "steps": steps if cls == "KSampler" else None,
                }
            )
            moment = finished
        return timings

    def job(self, batch: Batch) -> None:
        rng = self.rng
        job_type = TYPES.pick(rng)
        backend = BACKEND_PICKS[job_type].pick(rng)
        status = STATUSES.pick(rng)
        category = ""
        if status == JobStatus.FAILED:
            weights = dict(FAILURE_WEIGHTS)
            if backend == "gpu4":
                weights[FC.OUT_OF_MEMORY] *= 3
            if job_type == "video":
                weights[FC.TIMED_OUT] *= 4
            category = rng.choices(list(weights), weights=list(weights.values()))[0]
        steps = rng.choice((20, 25, 30))
        job_id = self._uuid()
        created = self._created_at()
        wait, run = self._wait(job_type), self._run(job_type)
        cancelled_waiting = status == JobStatus.CANCELLED and rng.random() < 0.4
        ran = not (cancelled_waiting or category in REFUSED)
        if status == JobStatus.FAILED and category == FC.TIMED_OUT:
            run = 3600.0
        elif ran and status != JobStatus.COMPLETED:
            run *= rng.uniform(0.05, 0.95)  # it stopped partway
        # A few jobs lost their worker once and completed on a second attempt (a second prompt).
        retried = status == JobStatus.COMPLETED and rng.random() < 0.015
        first_attempt = rng.uniform(60, 300) if retried else 0.0
        submitted = None if cancelled_waiting else created + timedelta(seconds=wait)
        # A job that ran was submitted first.
        started = submitted + timedelta(seconds=first_attempt + rng.uniform(0.05, 0.5)) if ran and submitted else None
        finished = (
            started + timedelta(seconds=run)
            if started
            else (submitted or created + timedelta(seconds=wait)) + timedelta(seconds=rng.uniform(0.05, 0.4))
        )
        if finished > self.now:  # keep the whole job in the past: history, not the live queue
            shift = finished - self.now + timedelta(seconds=rng.uniform(30, 600))
            created, finished = created - shift, finished - shift
            submitted = submitted - shift if submitted else None
            started = started - shift if started else None
        nodes = NODES[job_type]
        loader = nodes[0][0] if nodes[0][1] in LOADERS else nodes[1][0]
        cached = [loader] if ran and rng.random() < 0.75 else []
        attempt = 2 if retried else 1
        prompt_id = self._uuid() if retried else job_id
        message, details = _message(category, job_type, rng) if category else ("", {})
        progress = 1.0 if status == JobStatus.COMPLETED else (round(rng.uniform(0.05, 0.95), 3) if ran else 0.0)
        job = {
            "id": job_id,
            "user_id": self.users.pick(rng) if self.users else None,
            "backend": backend,
            "job_type": job_type,
            "priority": PRIORITIES.pick(rng),
            "workflow": self.workflows[job_type],
            "status": status,
            "prompt_id": prompt_id,
            "attempt": attempt,
            "fingerprint": self.fingerprints[(job_type, steps)],
            "created_at": created,
            "submitted_at": submitted,
            "started_at": started,
            "finished_at": finished,
            "client_id": uuid.UUID(int=job_id.int ^ 1).hex,
            "worker": f"celery@{backend}" if submitted else "",
            "heartbeat_at": finished if submitted else None,
            "deliveries": attempt if submitted else 1,
            "nodes_total": len(nodes),
            "nodes_done": len(nodes) if status == JobStatus.COMPLETED else int(progress * len(nodes)),
            "cached_nodes": cached,
            "progress": progress,
            "seq": rng.randint(8, 40) if ran else 3,
            "failure_category": category,
            "error_message": message,
            "error_details": details,
            "cancel_requested_at": finished if status == JobStatus.CANCELLED and ran else None,
            "steps": steps,
        }
        batch.jobs.append(job)
        if retried and submitted:  # a retried job completed, so it was submitted
            lost_at = submitted + timedelta(seconds=first_attempt)
            batch.attempts.append(
                {
                    "job_id": job_id,
                    "number": 1,
                    "prompt_id": job_id,
                    "backend": backend,
                    "worker": f"celery@{backend}",
                    "submitted_at": submitted,
                    "started_at": submitted + timedelta(seconds=0.2),
                    "finished_at": lost_at,
                    "outcome": JobStatus.FAILED,
                    "failure_category": FC.WORKER_LOST,
                    "error_message": "the worker running the job was lost; retrying",
                }
            )
        if submitted:
            resubmitted = started - timedelta(seconds=0.2) if retried and started else submitted
            batch.attempts.append(
                {
                    "job_id": job_id,
                    "number": attempt,
                    "prompt_id": prompt_id,
                    "backend": backend,
                    "worker": f"celery@{backend}",
                    "submitted_at": resubmitted,
                    "started_at": started,
                    "finished_at": finished,
                    "outcome": status,
                    "failure_category": category,
                    "error_message": message,
                }
            )
        if ran:
            stop_at = details.get("node_id") if category in (FC.OUT_OF_MEMORY, FC.NODE_ERROR) else None
            if status != JobStatus.COMPLETED and stop_at is None:
                stop_at = SAMPLER_STOP.get(job_type)
            batch.timings.extend(self._timings(job, run, stop_at))

    def batches(self, total: int, size: int) -> Iterator[Batch]:
        made = 0
        while made < total:
            batch = Batch()
            for _ in range(min(size, total - made)):
                self.job(batch)
            made += len(batch.jobs)
            yield batch


# A job that stopped partway (cancelled, lost, ...) stopped in its longest node.
SAMPLER_STOP = {job_type: next(n for n, c in nodes if c == SAMPLER[job_type]) for job_type, nodes in NODES.items()}


def history_users(count: int) -> list[int]:
    User = get_user_model()
    names = [f"artist{index:02d}" for index in range(1, count + 1)]
    existing = set(User.objects.filter(username__in=names).values_list("username", flat=True))
    User.objects.bulk_create([User(username=name, password="!") for name in names if name not in existing])
    return list(User.objects.filter(username__in=names).order_by("username").values_list("pk", flat=True))


def _columns(model: type[models.Model]) -> list[models.Field]:
    # Auto primary keys are left to the database's sequence.
    return [f for f in model._meta.concrete_fields if not isinstance(f, models.AutoField)]


def _quoted_columns(fields: list[models.Field]) -> str:
    # Concrete fields always have a column; the stubs allow None for fields without one (many-to-many).
    return ", ".join(connection.ops.quote_name(cast(str, f.column)) for f in fields)


# COPY's text format ends a field at a tab and a row at a newline, and reads backslashes as escapes.
COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
COPY_NULL = "\\N"
MISSING = object()


def _copy_text(field: models.Field) -> Callable[[Any], str]:
    """How COPY's text format spells a value of this field (None is COPY_NULL, decided by the caller)."""
    if isinstance(field, models.JSONField):
        return lambda value: json.dumps(value).translate(COPY_ESCAPES)
    if isinstance(field, models.BooleanField):
        return lambda value: "t" if value else "f"
    if isinstance(field, models.DateTimeField):
        return lambda value: value.isoformat()
    if isinstance(field, (models.CharField, models.TextField)):
        return lambda value: value.translate(COPY_ESCAPES)
    return str  # numbers and UUIDs


class CopyTable:
    """Rows of one model as COPY text lines, built as plain strings.

    psycopg's `write_row` adapts every value through its type registry: 2.6 s of the 7 s that 20,000
    jobs took to write. A column the rows leave out is its model default, spelled once.
    """

    def __init__(self, model: type[models.Model]) -> None:
        fields = _columns(model)
        self.sql = f"COPY {connection.ops.quote_name(model._meta.db_table)} ({_quoted_columns(fields)}) FROM STDIN"
        self.columns: list[tuple[str, Callable[[Any], str], str]] = []
        for f in fields:
            spell = _copy_text(f)
            default = f.get_default()  # "" for blank text, as Django saves it
            self.columns.append((f.attname, spell, COPY_NULL if default is None else spell(default)))

    def lines(self, rows: list[dict[str, Any]]) -> str:
        # The node timings of one job repeat its id, backend and fingerprint: spelled once.
        last: list[Any] = [MISSING] * len(self.columns)
        spelled = [""] * len(self.columns)
        out = []
        for row in rows:
            values = []
            for index, (name, spell, default) in enumerate(self.columns):
                value = row.get(name, MISSING)
                if value is MISSING:
                    values.append(default)
                elif value is last[index]:
                    values.append(spelled[index])
                else:
                    text = COPY_NULL if value is None else spell(value)
                    last[index], spelled[index] = value, text
                    values.append(text)
            out.append("\t".join(values))
        out.append("")
        return "\n".join(out)

    def copy(self, text: str) -> None:
        with connection.cursor() as cursor, cursor.copy(self.sql) as copy:
            copy.write(text)


def _insert_rows(model: type[models.Model], rows: list[dict[str, Any]]) -> None:
    """Plain multi-row INSERTs; not bulk_create, whose auto_now_add would stamp every job with today."""
    fields = _columns(model)
    defaults = {f.attname: f.get_default() for f in fields}  # "" for blank text, as Django saves it
    columns = _quoted_columns(fields)
    placeholders = ", ".join(["%s"] * len(fields))
    sql = f"INSERT INTO {connection.ops.quote_name(model._meta.db_table)} ({columns}) VALUES ({placeholders})"
    params = [[f.get_db_prep_save(row.get(f.attname, defaults[f.attname]), connection) for f in fields] for row in rows]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


HISTORY_MODELS: tuple[type[models.Model], ...] = (Job, JobAttempt, NodeTiming)


@contextmanager
def _indexes_set_aside() -> Iterator[None]:
    """Drop the secondary indexes and foreign keys of the history tables, and make them again at the end.

    A million jobs kept 15 indexes current row by row and queued a deferred foreign-key check per
    attempt and node timing (6.5 million of them, run at commit); building each index once from the
    sorted table and checking each key in one join is several times faster. The primary keys and
    unique constraints stay, so a duplicate is still refused. Runs inside the load's transaction:
    if the load fails, the indexes come back with the rollback.
    """
    tables = [model._meta.db_table for model in HISTORY_MODELS]
    with connection.cursor() as cursor:
        # Sorting a million keys in memory instead of in temporary files: 61 s for the indexes with 64 MB.
        cursor.execute("SET LOCAL maintenance_work_mem = '512MB'")
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
            "AND tablename = ANY(%s) AND indexname NOT IN "
            "(SELECT conname FROM pg_constraint WHERE conrelid = ANY(%s::regclass[]))",
            [tables, tables],
        )
        indexes = cursor.fetchall()
        cursor.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE contype = 'f' AND conrelid = ANY(%s::regclass[])",
            [tables],
        )
        foreign_keys = cursor.fetchall()
        for table, name, _ in foreign_keys:
            cursor.execute(f"ALTER TABLE {table} DROP CONSTRAINT {connection.ops.quote_name(name)}")
        for name, _ in indexes:
            cursor.execute(f"DROP INDEX {connection.ops.quote_name(name)}")
    yield
    with connection.cursor() as cursor:
        for _, definition in indexes:
            cursor.execute(definition)
        for table, name, definition in foreign_keys:
            cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {connection.ops.quote_name(name)} {definition}")


# What a load reports after each batch: jobs, attempts and node timings written.
BatchSizes = tuple[int, int, int]


def _sizes(batch: Batch) -> BatchSizes:
    return len(batch.jobs), len(batch.attempts), len(batch.timings)


def history_load(batches: Iterable[Batch], written: Callable[[BatchSizes], None]) -> None:
    """Write every batch in one transaction: COPY on PostgreSQL (indexes set aside), INSERTs elsewhere.

    One transaction, so an interrupted load leaves nothing behind; `written` is told of each batch.
    """
    with transaction.atomic():
        if connection.vendor != "postgresql":
            for batch in batches:
                for model, rows in zip(HISTORY_MODELS, (batch.jobs, batch.attempts, batch.timings), strict=True):
                    _insert_rows(model, rows)
                written(_sizes(batch))
            return
        tables = [CopyTable(model) for model in HISTORY_MODELS]
        with _indexes_set_aside(), _copy_texts(tables, batches) as texts:
            for sizes, table_texts in texts:
                for table, text in zip(tables, table_texts, strict=True):
                    table.copy(text)
                written(sizes)


def _produce(tables: list[CopyTable], batches: Iterable[Batch], out: multiprocessing.Queue) -> None:
    for batch in batches:
        rows = (batch.jobs, batch.attempts, batch.timings)
        out.put((_sizes(batch), [table.lines(table_rows) for table, table_rows in zip(tables, rows, strict=True)]))
    out.put(None)


@contextmanager
def _copy_texts(tables: list[CopyTable], batches: Iterable[Batch]) -> Iterator[Iterator[tuple[BatchSizes, list[str]]]]:
    """The batches as COPY text, made in a forked process while this one sends the previous batch.

    Making the rows is three quarters of a load's CPU (110 s of 150 s for a million jobs): here it
    runs beside PostgreSQL's parsing instead of taking turns with it. The child never touches the
    database connection it inherits (and leaves through os._exit, so nothing closes it).
    """
    context = multiprocessing.get_context("fork")
    out: multiprocessing.Queue = context.Queue(maxsize=2)
    producer = context.Process(target=_produce, args=(tables, batches, out), name="history rows", daemon=True)
    producer.start()

    def received() -> Iterator[tuple[BatchSizes, list[str]]]:
        while True:
            try:
                item = out.get(timeout=1)
            except queue.Empty:
                if not producer.is_alive():
                    raise RuntimeError(f"the history rows process exited ({producer.exitcode})") from None
                continue
            if item is None:
                return
            yield item

    try:
        yield received()
    finally:
        producer.terminate()
        producer.join()


def history_analyze(tables: Iterable[type[models.Model]] = HISTORY_MODELS) -> None:
    """Fresh planner statistics and visibility maps, so the dashboard's index-only scans are used
    (and the roll-ups' row counts are known: unanalysed, the planner took 3,600 rows for 9)."""
    if connection.vendor != "postgresql":
        return
    # VACUUM cannot run inside a transaction (a caller's atomic block, a test): ANALYZE can.
    command = "ANALYZE" if connection.in_atomic_block else "VACUUM ANALYZE"
    with connection.cursor() as cursor:
        for model in tables:
            cursor.execute(f"{command} {connection.ops.quote_name(model._meta.db_table)}")
