"""The Python client: everything the anime-jobs command does, for pipeline scripts.

    from pathlib import Path
    from anime_client import Client

    client = Client("http://127.0.0.1:8000", api_key)
    job = client.submit(Path("shot_012.json"), inputs={"12": Path("keyframe.png")}, priority=7)
    for state in client.watch(job.id):
        print(state.status, state.progress_percent, state.node_name, state.step)
    final = client.wait(job.id)           # the final state, whatever it is
    if final.status == "completed":
        client.download(job.id, Path("renders/shot_012"))
    run = client.run_template("keyframe-shot", {"seed": 42}, files={"keyframe": Path("shot12.png")})

It speaks the public REST and websocket API only (README, "API"), so it runs on any machine that
can reach the server, with nothing of the server installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, urlsplit

import requests

from anime_client.api_session import DEFAULT_TIMEOUT, ApiSession
from anime_client.downloads import save_response
from anime_client.errors import NotFound, ServerError, WorkflowError
from anime_client.pipelines import JobInput, job_inputs, load_pipeline, pipeline_states, with_assets
from anime_client.states import Asset, JobState, Output
from anime_client.templates import Template
from anime_client.watching import POLL_SECONDS, JobWatch, SocketOpener, open_websocket
from anime_client.workflow import InputBinding, checked_api_format, input_bindings, load_workflow, with_references

MAX_PAGE_SIZE = 200  # the server's cap on ?page_size=
Key = TypeVar("Key")


class Client:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        session: requests.Session | None = None,
        open_socket: SocketOpener = open_websocket,
        poll_seconds: float = POLL_SECONDS,
        on_notice: Callable[[str], None] | None = None,
    ) -> None:
        self.api = ApiSession(base_url, api_key, session=session, timeout=timeout)
        self.open_socket = open_socket
        self.poll_seconds = poll_seconds
        self.on_notice = on_notice

    # --- submitting ------------------------------------------------------------------------------

    def submit(
        self,
        workflow: Mapping[str, Any] | Path | str,
        inputs: Mapping[str, Path | str] | None = None,
        *,
        job_type: str = "image",
        priority: int = 5,
        backend: str | None = None,
        on_upload: Callable[[InputBinding, Asset], None] | None = None,
    ) -> JobState:
        """Submit an API-format workflow (a mapping, or the path of its JSON file).

        `inputs` maps a loader node ("12") or one of its inputs ("12.image") to a local file: each
        file is uploaded as an asset and the input set to "asset:<id>". Every target is checked
        before the first upload.
        """
        graph = checked_api_format(workflow) if isinstance(workflow, Mapping) else load_workflow(Path(workflow))
        bindings = input_bindings(graph, inputs or {})
        assets = self._assets_for([(binding, binding.path) for binding in bindings], on_upload)
        references = [(binding, asset.reference) for binding, asset in zip(bindings, assets, strict=True)]
        body: dict[str, Any] = {
            "workflow": with_references(graph, references),
            "job_type": job_type,
            "priority": priority,
        }
        if backend:
            body["backend"] = backend
        return JobState.from_api(self.api.json("POST", "api/jobs/", json=body, what="submit"))

    def run_template(
        self,
        name: str,
        values: Mapping[str, Any] | None = None,
        files: Mapping[str, Path | str] | None = None,
        *,
        version: int | None = None,
        priority: int = 5,
        backend: str | None = None,
        job_name: str = "",
        project: str = "",
        shot: str = "",
        tags: Sequence[str] = (),
        on_upload: Callable[[str, Asset], None] | None = None,
    ) -> JobState:
        """Run a workflow template once (`POST /api/templates/<name>/jobs/`): the job.

        `values` are the inputs' values as JSON (`{"seed": 42, "prompt": "a fox"}`); `files` maps a
        file input to a local file, uploaded as an asset first (the same file for two inputs is one
        upload). Every file is checked to exist before the first upload; the server checks the rest
        and names the input it refuses. `version` runs an earlier version; the latest otherwise.
        """
        paths = [(input_name, Path(path)) for input_name, path in (files or {}).items()]
        for input_name, path in paths:
            if not path.is_file():
                raise WorkflowError(f"--input {input_name}={path}: no such file")
        assets = self._assets_for(paths, on_upload)
        inputs = {**(values or {}), **{key: asset.reference for (key, _), asset in zip(paths, assets, strict=True)}}
        body: dict[str, Any] = {"inputs": inputs, "priority": priority}
        optional = {"version": version, "backend": backend, "name": job_name, "project": project, "shot": shot}
        body.update({key: value for key, value in optional.items() if value})
        if tags:
            body["tags"] = list(tags)
        url = f"api/templates/{quote(name, safe='')}/jobs/"
        return JobState.from_api(self.api.json("POST", url, json=body, what=f"run template {name}"))

    def submit_pipeline(
        self,
        pipeline: Mapping[str, Any] | Path | str,
        inputs: Mapping[str, Path | str] | None = None,
        *,
        on_upload: Callable[[JobInput, Asset], None] | None = None,
    ) -> dict[str, Any]:
        """Submit a shot pipeline (`POST /api/pipelines/`): the request as a mapping, or the path of
        its JSON file. `inputs` maps "KEY.NODE" or "KEY.NODE.INPUT" to a local file, uploaded as an
        asset first (every target checked before the first upload). Returns the pipeline, with each
        job's key and id."""
        body = dict(pipeline) if isinstance(pipeline, Mapping) else load_pipeline(Path(pipeline))
        found = job_inputs(body, {target: Path(path) for target, path in (inputs or {}).items()})
        assets = self._assets_for([(item, item.binding.path) for item in found], on_upload)
        request = with_assets(body, [(item, asset.reference) for item, asset in zip(found, assets, strict=True)])
        answer: dict[str, Any] = self.api.json("POST", "api/pipelines/", json=request, what="submit pipeline")
        return answer

    def pipeline(self, pipeline_id: str) -> dict[str, Any]:
        """A pipeline: status, progress, ETA (an estimate) and its jobs."""
        answer: dict[str, Any] = self.api.json("GET", f"api/pipelines/{pipeline_id}/", what=f"pipeline {pipeline_id}")
        return answer

    def pipeline_watch(self, pipeline_id: str, *, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """The pipeline's states, polled, ending with its final one; WaitTimeout after `timeout`."""
        return pipeline_states(self.api, pipeline_id, poll_seconds=self.poll_seconds, timeout=timeout)

    def pipeline_cancel(self, pipeline_id: str) -> dict[str, Any]:
        """Cancel every job of the pipeline that has not ended."""
        what = f"cancel pipeline {pipeline_id}"
        answer: dict[str, Any] = self.api.json("POST", f"api/pipelines/{pipeline_id}/cancel/", what=what)
        return answer

    def _assets_for(
        self, files: Sequence[tuple[Key, Path]], on_upload: Callable[[Key, Asset], None] | None
    ) -> list[Asset]:
        """The asset of each file, in order, each distinct file uploaded once."""
        uploaded: dict[Path, Asset] = {}
        assets = []
        for key, path in files:
            resolved = path.resolve()
            if resolved not in uploaded:
                uploaded[resolved] = self.upload_asset(path)
                if on_upload is not None:
                    on_upload(key, uploaded[resolved])
            assets.append(uploaded[resolved])
        return assets

    def upload_asset(self, path: Path | str) -> Asset:
        """Upload a file as an asset; the same bytes uploaded before give the same asset back."""
        path = Path(path)
        what = f"upload {path.name}"
        try:
            with open(path, "rb") as handle:
                response = self.api.request("POST", "api/assets/", files={"file": (path.name, handle)}, what=what)
        except NotFound as exc:
            raise NotFound(
                f"{what}: this server takes no asset uploads (POST /api/assets/ is a 404)",
                status=exc.status,
                reason=exc.reason,
            ) from exc
        try:
            data = response.json()
            return Asset(
                id=str(data["id"]),
                media_type=str(data.get("media_type") or ""),
                created=response.status_code == 201,
                raw=data,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ServerError(f"{what}: the answer names no asset id", status=response.status_code, reason="") from exc

    # --- reading ---------------------------------------------------------------------------------

    def job(self, job_id: str) -> JobState:
        return JobState.from_api(self.api.json("GET", f"api/jobs/{job_id}/", what=f"job {job_id}"))

    def jobs(
        self,
        *,
        status: str | None = None,
        job_type: str | None = None,
        backend: str | None = None,
        failure_category: str | None = None,
        limit: int = 50,
    ) -> list[JobState]:
        """Your jobs (staff: everyone's), newest first, at most `limit`, following the cursor pages."""
        filters = {"status": status, "job_type": job_type, "backend": backend, "failure_category": failure_category}
        params: dict[str, Any] = {name: value for name, value in filters.items() if value}
        params["page_size"] = min(max(limit, 1), MAX_PAGE_SIZE)
        found: list[JobState] = []
        while len(found) < limit:
            page = self.api.json("GET", "api/jobs/", params=params, what="list jobs")
            found += [JobState.from_api(item) for item in page.get("results") or ()]
            cursor = _cursor(page.get("next"))
            if cursor is None:
                break
            params["cursor"] = cursor
        return found[:limit]

    def templates(self) -> list[dict[str, Any]]:
        """The workflow templates you may run: name, description, latest_version, staff_only."""
        body = self.api.json("GET", "api/templates/", what="list templates")
        return [item for item in body if isinstance(item, dict)] if isinstance(body, list) else []

    def template(self, name: str, version: int | None = None) -> Template:
        """A template's latest version, or version `version`: its typed inputs and their bounds."""
        path = f"api/templates/{quote(name, safe='')}/"
        if version is not None:
            path += f"versions/{version}/"
        what = f"template {name}" + (f" v{version}" if version is not None else "")
        return Template.from_api(self.api.json("GET", path, what=what))

    def outputs(self, job_id: str) -> list[Output]:
        """A completed job's outputs (none before it completes)."""
        return list(self.job(job_id).outputs)

    def stats(self, days: int) -> dict[str, Any]:
        """GET /api/stats/?days=N (staff with the permission to view jobs)."""
        body: dict[str, Any] = self.api.json("GET", "api/stats/", params={"days": days}, what="statistics")
        return body

    # --- following -------------------------------------------------------------------------------

    def watch(self, job_id: str, *, timeout: float | None = None) -> Iterator[JobState]:
        """The job's states as they change, ending with its final one (completed, failed, cancelled).

        Live over the websocket; by polling when the websocket cannot be opened."""
        return self.job_watch(job_id, timeout=timeout).states()

    def job_watch(self, job_id: str, *, timeout: float | None = None) -> JobWatch:
        return JobWatch(
            self.api,
            job_id,
            open_socket=self.open_socket,
            poll_seconds=self.poll_seconds,
            timeout=timeout,
            on_notice=self.on_notice,
        )

    def wait(self, job_id: str, *, timeout: float | None = None) -> JobState:
        """The job's final state; WaitTimeout when it has none after `timeout` seconds."""
        final = None
        for state in self.watch(job_id, timeout=timeout):
            final = state
        assert final is not None and final.finished  # a watch ends only at a final state, or raises
        return final

    # --- changing --------------------------------------------------------------------------------

    def cancel(self, job_id: str) -> JobState:
        """Cancelled at once when still waiting; otherwise the cancel is under way (`status` tells)."""
        return JobState.from_api(self.api.json("POST", f"api/jobs/{job_id}/cancel/", what=f"cancel job {job_id}"))

    def retry(self, job_id: str) -> JobState:
        """A failed or cancelled job, again: the new job (the same one when it was retried already)."""
        return JobState.from_api(self.api.json("POST", f"api/jobs/{job_id}/retry/", what=f"retry job {job_id}"))

    # --- downloading -----------------------------------------------------------------------------

    def download(self, job_id: str, directory: Path | str, *, overwrite: bool = False) -> list[Path]:
        """Every output of a completed job into `directory`, under the server's file names."""
        return [self.download_output(output, directory, overwrite=overwrite) for output in self.outputs(job_id)]

    def download_output(self, output: Output, directory: Path | str, *, overwrite: bool = False) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        response = self.api.request("GET", output.download_url, stream=True, what=f"download output {output.id}")
        with response:
            return save_response(response, output, directory, overwrite=overwrite)


def _cursor(next_url: Any) -> str | None:
    """The cursor of DRF's `next` link: the next page is asked of our base URL, whatever host the
    server put in the link."""
    if not next_url:
        return None
    values = parse_qs(urlsplit(str(next_url)).query).get("cursor")
    return values[0] if values else None
