"""A job's input assets, put into its ComfyUI's input folder just before its prompt is submitted.

Names: each job has a subfolder of its own in ComfyUI's input folder, `anime_production/<job id>`,
and each asset it uses the name `<job id>-<n>.<extension>`: n is the asset's place among the job's
distinct assets (assets.references.distinct_assets: by node id, then input name), the extension
what its bytes are. Nothing a user typed becomes part of a path, and ComfyUI's answer is checked
(comfyui.uploads). The prompt submitted names each file as loaders expect one in a subfolder,
"<subfolder>/<name>"; the job's stored workflow keeps the "asset:<id>" references it was given.

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
from typing import Any, BinaryIO, cast

from django.conf import settings

from assets.models import Asset
from assets.references import AssetReference, asset_references, distinct_assets
from assets.selectors import assets_for_job
from comfyui import ComfyUIClient, ComfyUIError, UploadedInput
from jobs.failures import Failure
from jobs.models import EventKind, FailureCategory, Job
from jobs.tracking.coalescer import Coalescer
from jobs.tracking.ending import JobEnding
from jobs.tracking.timeline import Timeline

logger = logging.getLogger(__name__)

INPUT_ROOT = "anime_production"


def input_subfolder(job_id: uuid.UUID) -> str:
    return f"{INPUT_ROOT}/{job_id}"


def input_filename(job_id: uuid.UUID, index: int, extension: str) -> str:
    return f"{job_id}-{index}.{extension}"


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
        """The prompt to submit: the job's workflow with its asset references replaced by the names
        of the files placed in ComfyUI's input folder (uploading them first)."""
        references, _ = asset_references(self.job.workflow)
        if not references:
            return self.job.workflow
        order = distinct_assets(references)
        assets = assets_for_job(self.job.user_id, order)
        self._fail_if_missing(references, assets)
        placed = {asset_id: self._place(assets[asset_id], index) for index, asset_id in enumerate(order)}
        prompt = copy.deepcopy(self.job.workflow)
        for reference in references:
            prompt[reference.node_id]["inputs"][reference.input_name] = placed[reference.asset_id].loader_value
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
                        "asset": str(reference.asset_id),
                        "comfyui_name": placed[reference.asset_id].loader_value,
                    }
                    for reference in references
                ],
            },
        )
        return prompt

    def _fail_if_missing(self, references: list[AssetReference], assets: dict[uuid.UUID, Asset]) -> None:
        # Checked when the job was submitted; an asset can still go between then and now (its owner
        # deleted it in the moment the job was created, or the job is a retry of an older one).
        missing = [reference for reference in references if reference.asset_id not in assets]
        if missing:
            named = "; ".join(f"{r.label} = 'asset:{r.asset_id}'" for r in missing[:10])
            self.ending.fail(Failure(FailureCategory.VALIDATION, f"input assets no longer exist: {named}"))

    def _place(self, asset: Asset, index: int) -> UploadedInput:
        filename = input_filename(self.job.id, index, asset.extension)
        deadline = time.monotonic() + settings.TRACKER_RECONNECT_SECONDS
        while True:
            try:
                with asset.file.storage.open(asset.file.name or "", "rb") as handle:
                    placed = self.client.upload_image(
                        cast(BinaryIO, handle),
                        filename=filename,
                        size=asset.size_bytes,
                        subfolder=input_subfolder(self.job.id),
                        on_chunk=self.coalescer.beat_if_due,
                    )
                logger.info("job %s: asset %s placed in ComfyUI as %s", self.job.id, asset.id, placed.loader_value)
                return placed
            except FileNotFoundError:
                self.ending.fail(
                    Failure(FailureCategory.VALIDATION, f"input asset {asset.id}: its file is no longer in storage")
                )
            except ComfyUIError as exc:
                if not exc.retryable:
                    message = f"ComfyUI refused input asset {asset.id} as {filename}: {exc}"
                    self.ending.fail(Failure(FailureCategory.VALIDATION, message))
                if time.monotonic() > deadline:
                    self.ending.fail(Failure(FailureCategory.COMFYUI_UNREACHABLE, str(exc)))
                logger.warning("job %s: upload of asset %s failed: %s; retrying", self.job.id, asset.id, exc)
            time.sleep(1.0)
            self.coalescer.beat_if_due()
