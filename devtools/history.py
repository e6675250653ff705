"""Realistic job history for scale tests and demos: `python manage.py generate_history --jobs 1000000`.

Jobs over the last ~90 days (busier in working hours), image 70 % / video 20 % / upscale 10 % on
gpu1..gpu4, mostly completed, failures spread over the categories with the messages ComfyUI really
gives, some cancelled; queue waits, run times, node timings and attempts to match. Rows are written
with COPY on PostgreSQL and bulk_create elsewhere, in batches, so a million jobs take minutes.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
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
        self.user_weights = [1 / (rank + 1) for rank in range(len(user_ids))]
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
        hour = rng.choices(range(24), weights=HOUR_WEIGHTS)[0]
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
        job_type = rng.choices([t for t, _ in JOB_TYPES], weights=[w for _, w in JOB_TYPES])[0]
        backend = rng.choices(BACKENDS, weights=BACKEND_WEIGHTS[job_type])[0]
        status = rng.choices([s for s, _ in STATUS_WEIGHTS], weights=[w for _, w in STATUS_WEIGHTS])[0]
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
            "user_id": rng.choices(self.user_ids, weights=self.user_weights)[0] if self.user_ids else None,
            "backend": backend,
            "job_type": job_type,
            "priority": rng.choices((5, 7, 9, 2), weights=(80, 12, 3, 5))[0],
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


def _copy_rows(model: type[models.Model], rows: list[dict[str, Any]]) -> None:
    """COPY ... FROM STDIN: several times faster than INSERTs for a million rows."""
    fields = _columns(model)
    defaults = {f.attname: f.get_default() for f in fields}  # "" for blank text, as Django saves it
    json_fields = {f.attname for f in fields if isinstance(f, models.JSONField)}
    columns = _quoted_columns(fields)
    sql = f"COPY {connection.ops.quote_name(model._meta.db_table)} ({columns}) FROM STDIN"
    with connection.cursor() as cursor, cursor.copy(sql) as copy:
        for row in rows:
            values = []
            for f in fields:
                value = row.get(f.attname, defaults[f.attname])
                if f.attname in json_fields:
                    value = json.dumps(value)
                values.append(value)
            copy.write_row(values)


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


def history_write(batch: Batch) -> None:
    write: Callable[[type[models.Model], list[dict[str, Any]]], None] = (
        _copy_rows if connection.vendor == "postgresql" else _insert_rows
    )
    with transaction.atomic():
        write(Job, batch.jobs)
        write(JobAttempt, batch.attempts)
        write(NodeTiming, batch.timings)


def history_analyze() -> None:
    """Fresh planner statistics and visibility maps, so the dashboard's index-only scans are used."""
    if connection.vendor != "postgresql":
        return
    # VACUUM cannot run inside a transaction (a caller's atomic block, a test): ANALYZE can.
    command = "ANALYZE" if connection.in_atomic_block else "VACUUM ANALYZE"
    with connection.cursor() as cursor:
        for model in (Job, JobAttempt, NodeTiming):
            cursor.execute(f"{command} {connection.ops.quote_name(model._meta.db_table)}")
