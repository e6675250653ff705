"""Everything the front door changes: a prompt becomes a job (jobs.services.job_create), the queue's
delete and clear and an interrupt cancel the caller's own jobs (jobs.services.job_cancel), the
history's delete and clear hide prompts from the front door, an upload becomes an asset with a name."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone

from assets.services import asset_create
from comfy_api import selectors
from comfy_api.history import milliseconds
from comfy_api.input_names import InputNames
from comfy_api.models import INPUT_NAME_MAX_CHARS, SUBFOLDER_MAX_CHARS, FrontDoorInput, FrontDoorPrompt
from jobs.labels import JobLabels
from jobs.services import job_cancel, job_create

# ComfyUI's `front` puts a prompt first in its one queue. Here it is one priority step above the
# REST API's default (5): ahead of the caller's (and everyone's) ordinary work, behind the urgent
# steps (7-9) that the studio's own tools use; a ComfyUI client cannot reach those.
DEFAULT_PRIORITY = 5
FRONT_PRIORITY = 6
# Every front-door job carries this tag: REST (?tags=), the admin and the statistics can tell them apart.
FRONT_DOOR_TAG = "comfyui-front-door"
# Names kept per user for uploads; past it the least recently written names are forgotten.
INPUT_NAMES_PER_USER = 10_000


def front_door_job_type(extra_data: dict[str, Any]) -> str:
    """`extra_data.job_type` when it is one of JOB_TYPES; else "image" (or the first job type)."""
    wanted = extra_data.get("job_type")
    if isinstance(wanted, str) and wanted in settings.JOB_TYPES:
        return wanted
    return "image" if "image" in settings.JOB_TYPES else settings.JOB_TYPES[0]


@dataclass(frozen=True)
class PromptSubmission:
    """A checked POST /prompt: the prompt as sent, the job's workflow, and ComfyUI's fields."""

    prompt: dict[str, Any]
    workflow: dict[str, Any]
    input_names: InputNames
    outputs: list[str]
    client_id: str = ""
    prompt_id: str | None = None
    number: int | None = None
    front: bool = False
    extra_data: dict[str, Any] = field(default_factory=dict)


def front_door_prompt_create(*, user: Any, submission: PromptSubmission) -> FrontDoorPrompt:
    """The job and its front-door row, in one transaction. IntegrityError when the caller already
    has a prompt with this prompt_id (nothing is kept then: the job's creation is undone too)."""
    with transaction.atomic():
        job = job_create(
            user=user,
            workflow=submission.workflow,
            job_type=front_door_job_type(submission.extra_data),
            priority=FRONT_PRIORITY if submission.front else DEFAULT_PRIORITY,
            labels=JobLabels(tags=(FRONT_DOOR_TAG,)),
        )
        extra_data = {
            **submission.extra_data,
            "client_id": submission.client_id,
            "create_time": milliseconds(job.created_at),
        }
        row = FrontDoorPrompt.objects.create(
            job=job,
            user=user,
            client_id=submission.client_id,
            prompt_id=submission.prompt_id or str(job.id),
            extra_data=extra_data,
            outputs_to_execute=submission.outputs,
            input_names=submission.input_names,
        )
        # ComfyUI numbers prompts in the order they came, `front` ones negative (so first).
        if submission.number is not None:
            row.number = submission.number
        else:
            row.number = -row.pk if submission.front else row.pk
        FrontDoorPrompt.objects.filter(pk=row.pk).update(number=row.number)
    return row


def front_door_queue_delete(*, user: Any, prompt_ids: list[str] | None) -> int:
    """POST /queue delete (or clear, `prompt_ids` None): the caller's waiting prompts are cancelled
    and, as in ComfyUI, vanish (no history). Running ones are left alone, as ComfyUI leaves them."""
    rows = selectors.queued_prompts(user).filter(job__status__in=selectors.WAITING)
    if prompt_ids is not None:
        rows = rows.filter(prompt_id__in=prompt_ids)
    removed = 0
    for row in rows:
        job = job_cancel(row.job)
        if job.is_final:
            FrontDoorPrompt.objects.filter(pk=row.pk).update(hidden_at=timezone.now())
            removed += 1
    return removed


def front_door_interrupt(*, user: Any, prompt_id: str | None) -> int:
    """POST /interrupt: the caller's running prompt (or all of theirs that run, without an id) is
    cancelled; its tracker interrupts it on its GPU. Never anyone else's, never a whole GPU."""
    rows = selectors.user_prompts(user).filter(job__status__in=selectors.RUNNING)
    if prompt_id is not None:
        rows = rows.filter(prompt_id=prompt_id)
    count = 0
    for row in rows:
        job_cancel(row.job)
        count += 1
    return count


def front_door_history_hide(*, user: Any, prompt_ids: list[str] | None) -> int:
    """POST /history delete (or clear): gone from the caller's front-door history; the job stays."""
    rows = selectors.history_prompts(user)
    if prompt_ids is not None:
        rows = rows.filter(prompt_id__in=prompt_ids)
    return FrontDoorPrompt.objects.filter(pk__in=rows.values("pk")).update(hidden_at=timezone.now())


# --- uploads -------------------------------------------------------------------------------------


class UploadRefused(ValueError):
    """A name or subfolder the front door will not keep; the message says why."""


_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


def upload_name(filename: str) -> str:
    name = PurePosixPath(filename.replace("\\", "/")).name.strip()
    if not name or name in (".", "..") or _UNSAFE.search(name):
        raise UploadRefused("the upload needs a file name")
    if len(name) > INPUT_NAME_MAX_CHARS:
        raise UploadRefused(f"the file name is longer than {INPUT_NAME_MAX_CHARS} characters")
    return name


def upload_subfolder(subfolder: str) -> str:
    """A relative folder of plain names ("", "clipspace", "a/b"); ComfyUI refuses one leaving its
    input folder, and so does this."""
    parts = [part for part in subfolder.replace("\\", "/").split("/") if part not in ("", ".")]
    if subfolder.startswith(("/", "\\")) or ".." in parts or _UNSAFE.search(subfolder):
        raise UploadRefused("the subfolder must be a relative folder inside the input folder")
    cleaned = "/".join(parts)
    if len(cleaned) > SUBFOLDER_MAX_CHARS:
        raise UploadRefused(f"the subfolder is longer than {SUBFOLDER_MAX_CHARS} characters")
    return cleaned


def front_door_input_store(*, user: Any, upload: UploadedFile, subfolder: str, overwrite: bool) -> FrontDoorInput:
    """The upload as the caller's asset (assets.services.asset_create: its checks and quota, AssetRefused),
    under its file name. As in ComfyUI, an existing name with other bytes is kept unless `overwrite`,
    and the upload is named "stem (1).ext" instead; the same bytes again keep the name."""
    name = upload_name(upload.name or "")
    folder = upload_subfolder(subfolder)
    asset, _ = asset_create(owner=user, upload=upload, name=name)
    with transaction.atomic():
        mine = FrontDoorInput.objects.select_for_update().filter(user=user, subfolder=folder)
        existing = mine.filter(name=name).first()
        if existing is not None and (overwrite or existing.asset_id == asset.id):
            existing.asset = asset
            existing.save(update_fields=["asset", "updated_at"])
            return existing
        if existing is not None:
            name = _free_name(mine, name, asset.id)
        row, _ = FrontDoorInput.objects.update_or_create(
            user=user, subfolder=folder, name=name, defaults={"asset": asset}
        )
    _forget_oldest_names(user)
    return row


def _free_name(mine: Any, name: str, asset_id: Any) -> str:
    stem, dot, suffix = name.rpartition(".")
    if not dot:
        stem, suffix = name, ""
    ending = f".{suffix}" if dot else ""
    taken = dict(mine.filter(name__startswith=f"{stem} (").values_list("name", "asset_id"))
    number = 1
    while True:
        candidate = f"{stem} ({number}){ending}"[-INPUT_NAME_MAX_CHARS:]
        if candidate not in taken or taken[candidate] == asset_id:
            return candidate
        number += 1


def _forget_oldest_names(user: Any) -> None:
    mine = FrontDoorInput.objects.filter(user=user)
    if mine.count() > INPUT_NAMES_PER_USER:
        oldest = list(mine.order_by("-updated_at").values_list("pk", flat=True)[INPUT_NAMES_PER_USER:])
        FrontDoorInput.objects.filter(pk__in=oldest).delete()
