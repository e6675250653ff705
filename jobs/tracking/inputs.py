"""A job's input files, put into its ComfyUI's input folder just before its prompt is submitted:
its assets ("asset:<id>") and the outputs of the jobs it depends on ("output:<job id>/<n>").

Both are a stored file to place (StoredInput), read from the project's storage and placed by one
code path, so the job may run on any backend whatever backend made the output.

Names: each job has a subfolder of its own in ComfyUI's input folder, `anime_production/<job id>`,
and each file it uses the name `<job id>-<n>.<extension>`: n is the file's place among the job's
distinct assets (assets.references.distinct_assets: by node id, then input name), then its distinct
upstream outputs in the same order; the extension is what its bytes are. Nothing a user typed
becomes part of a path, and ComfyUI's answer is checked (comfyui.uploads). The prompt submitted
names each file as loaders expect one in a subfolder, "<subfolder>/<name>"; the job's stored
workflow keeps the references it was given.

Idempotent: a second delivery, or a later attempt, uploads the same bytes under the same names, and
ComfyUI keeps a file of the same name and bytes (`overwrite` false) and answers the same name. A
delivery that finds its prompt already in ComfyUI uploads nothing (the tracker uploads only right
before it submits). Uploads are retried, like the other ComfyUI calls, while ComfyUI is unreachable.

ComfyUI has no endpoint that deletes input files: the job's timeline names the files placed, and
the subfolder can be removed from the GPU machine by hand (README, "Input files").
"""

from __future__ import annotations

import copy
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, NoReturn

from django.conf import settings
from django.db.models.fields.files import FieldFile

from assets.object_store import STORE_ERRORS, stored_reader
from assets.references import ASSET_PREFIX, OUTPUT_PREFIX, asset_references, distinct_assets, output_references
from assets.selectors import assets_for_job
from comfyui import ComfyUIClient, ComfyUIError, UploadedInput
from jobs.failures import Failure
from jobs.models import EventKind, FailureCategory, Job, JobOutput
from jobs.tracking.coalescer import Coalescer
from jobs.tracking.ending import JobEnding
from jobs.tracking.timeline import Timeline

logger = logging.getLogger(__name__)

INPUT_ROOT = "anime_production"


def input_subfolder(job_id: uuid.UUID) -> str:
    return f"{INPUT_ROOT}/{job_id}"


def input_filename(job_id: uuid.UUID, index: int, extension: str) -> str:
    return f"{job_id}-{index}.{extension}"


@dataclass(frozen=True)
class StoredInput:
    """A file in the project's storage that a job reads: an asset, or another job's output."""

    value: str  # the reference as the workflow holds it: "asset:<id>", "output:<job id>/<n>"
    file: FieldFile
    size: int
    extension: str


@dataclass(frozen=True)
class Reference:
    """One node input naming a stored input."""

    node_id: str
    input_name: str
    label: str
    value: str


class InputPlacement:
    def __init__(
        self, job: Job, client: ComfyUIClient, *, timeline: Timeline, coalescer: Coalescer, ending: JobEnding
    ) -> None:
        self.job = job
        self.client = client
        self.timeline = timeline
        self.coalescer = coalescer
        self.ending = ending

    def prompt(self) -> dict[str, Any]:
        """The prompt to submit: the job's workflow with its references replaced by the names of the
        files placed in ComfyUI's input folder (uploading them first)."""
        references, stored = self._assets()
        output_refs, outputs = self._outputs()
        references += output_refs
        if not references:
            return self.job.workflow
        files = [*stored, *outputs]
        placed = {item.value: self._place(item, index) for index, item in enumerate(files)}
        prompt = copy.deepcopy(self.job.workflow)
        for reference in references:
            prompt[reference.node_id]["inputs"][reference.input_name] = placed[reference.value].loader_value
        self.timeline.event(
            EventKind.NOTE,
            data={
                "message": (
                    f"{len(placed)} input file(s) placed in ComfyUI's input folder, under "
                    f"{input_subfolder(self.job.id)}/ (ComfyUI cannot delete them: remove that folder by hand)"
                ),
                "inputs_placed": [
                    {
                        "node_id": reference.node_id,
                        "input": reference.input_name,
                        **_named(reference.value),
                        "comfyui_name": placed[reference.value].loader_value,
                    }
                    for reference in references
                ],
            },
        )
        return prompt

    def _assets(self) -> tuple[list[Reference], list[StoredInput]]:
        found, _ = asset_references(self.job.workflow)
        order = distinct_assets(found)
        assets = assets_for_job(self.job.user_id, order)
        # Checked when the job was submitted; an asset can still go between then and now (its owner
        # deleted it in the moment the job was created, or the job is a retry of an older one).
        missing = [reference for reference in found if reference.asset_id not in assets]
        if missing:
            named = "; ".join(f"{r.label} = 'asset:{r.asset_id}'" for r in missing[:10])
            self.ending.fail(Failure(FailureCategory.VALIDATION, f"input assets no longer exist: {named}"))
        references = [Reference(r.node_id, r.input_name, r.label, f"{ASSET_PREFIX}{r.asset_id}") for r in found]
        stored = [
            StoredInput(
                f"{ASSET_PREFIX}{asset_id}",
                assets[asset_id].file,
                assets[asset_id].size_bytes,
                assets[asset_id].extension,
            )
            for asset_id in order
        ]
        return references, stored

    def _outputs(self) -> tuple[list[Reference], list[StoredInput]]:
        """The upstream outputs the job reads, n-th in the order the API lists a job's outputs. The
        job was released because they existed; one gone since (or a job submitted with a reference
        to one that never came) fails the job `dependency_failed`."""
        found, _ = output_references(self.job.workflow)
        references = [Reference(r.node_id, r.input_name, r.label, r.value) for r in found]
        stored: dict[str, StoredInput] = {}
        listed: dict[str, list[JobOutput]] = {}
        for reference in found:
            if reference.value in stored:
                continue
            if reference.source not in listed:
                upstream = reference.job_id
                rows = (
                    JobOutput.objects.filter(job_id=upstream).order_by("id") if upstream else JobOutput.objects.none()
                )
                listed[reference.source] = list(rows[: reference.index + 1])
            outputs = listed[reference.source]
            if reference.index >= len(outputs):
                self._dependency_failed(f"{reference.label} = {reference.value!r}: that job has no such output")
            output = outputs[reference.index]
            stored[reference.value] = StoredInput(reference.value, output.file, output.size_bytes, _extension(output))
        return references, list(stored.values())

    def _dependency_failed(self, message: str) -> NoReturn:
        self.ending.fail(Failure(FailureCategory.DEPENDENCY_FAILED, message))

    def _place(self, item: StoredInput, index: int) -> UploadedInput:
        filename = input_filename(self.job.id, index, item.extension)
        deadline = time.monotonic() + settings.TRACKER_RECONNECT_SECONDS
        store_deadline = time.monotonic() + settings.STORAGE_RETRY_SECONDS
        while True:
            try:
                with stored_reader(item.file.storage, item.file.name or "") as handle:
                    placed = self.client.upload_image(
                        handle,
                        filename=filename,
                        size=item.size,
                        subfolder=input_subfolder(self.job.id),
                        on_chunk=self.coalescer.beat_if_due,
                    )
                logger.info("job %s: %s placed in ComfyUI as %s", self.job.id, item.value, placed.loader_value)
                return placed
            except FileNotFoundError:
                message = f"input {item.value}: its file is no longer in storage"
                category = FailureCategory.DEPENDENCY_FAILED if item.value.startswith(OUTPUT_PREFIX) else None
                self.ending.fail(Failure(category or FailureCategory.VALIDATION, message))
            except ComfyUIError as exc:
                if not exc.retryable:
                    message = f"ComfyUI refused input {item.value} as {filename}: {exc}"
                    self.ending.fail(Failure(FailureCategory.VALIDATION, message))
                if time.monotonic() > deadline:
                    self.ending.fail(Failure(FailureCategory.COMFYUI_UNREACHABLE, str(exc)))
                logger.warning("job %s: upload of %s failed: %s; retrying", self.job.id, item.value, exc)
            except STORE_ERRORS as exc:
                # The file store is down (S3 unreachable, a lost mount): wait for it as for ComfyUI.
                if time.monotonic() > store_deadline:
                    message = f"input {item.value} could not be read from the file store: {type(exc).__name__}: {exc}"
                    self.ending.fail(Failure(FailureCategory.STORAGE_UNAVAILABLE, message))
                logger.warning("job %s: reading %s from storage failed: %s; retrying", self.job.id, item.value, exc)
            time.sleep(1.0)
            self.coalescer.beat_if_due()


def _named(value: str) -> dict[str, str]:
    """What the timeline names a placed file by: {"asset": <id>} or {"output": "output:<job id>/<n>"}."""
    if value.startswith(ASSET_PREFIX):
        return {"asset": value.removeprefix(ASSET_PREFIX)}
    return {"output": value}


def _extension(output: JobOutput) -> str:
    # The stored name's suffix: generated by the project from the sniffed type (jobs.models.output_upload_path).
    return (output.file.name or "").rsplit(".", 1)[-1] or "bin"
