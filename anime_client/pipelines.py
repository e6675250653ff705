"""Shot pipelines from the command line: the request file, local files given to its jobs'
loaders, and the live table of its jobs (`anime-jobs pipeline submit | watch | cancel`).

The file is the body of `POST /api/pipelines/` as it is (README, "Shot pipelines"): a name, labels,
defaults, and `jobs`, each with a `key` and a `workflow` whose inputs may read another job's output
as "output:<key>/<n>". `--input KEY.NODE[.INPUT]=FILE` uploads FILE as an asset and sets that loader
input of that job to it, as `submit --input` does for one workflow.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from anime_client.api_session import ApiSession
from anime_client.errors import WaitTimeout, WorkflowError
from anime_client.terminal_text import one_line
from anime_client.workflow import InputBinding, checked_api_format, input_bindings, with_references

FINAL = ("completed", "failed", "cancelled")
PIPELINE_FILE_MAX_BYTES = 64 * 1024 * 1024  # the server refuses bodies far smaller; this only stops a wrong file


@dataclass(frozen=True)
class JobInput:
    """`--input KEY.NODE[.INPUT]=FILE`: one local file for one loader of one job of the pipeline."""

    key: str
    binding: InputBinding


def load_pipeline(path: Path) -> dict[str, Any]:
    """The request in the file, checked for its shape (an object with a list of keyed jobs)."""
    try:
        if path.stat().st_size > PIPELINE_FILE_MAX_BYTES:
            raise WorkflowError(f"{path}: larger than {PIPELINE_FILE_MAX_BYTES // 2**20} MB; is it a pipeline?")
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise WorkflowError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise WorkflowError(f"{path}: not JSON ({exc})") from None
    jobs = data.get("jobs") if isinstance(data, dict) else None
    if not isinstance(jobs, list) or not jobs:
        raise WorkflowError(f'{path}: a pipeline is an object with "jobs": a list of {{"key", "workflow"}}')
    for index, job in enumerate(jobs):
        if not isinstance(job, dict) or not isinstance(job.get("key"), str):
            raise WorkflowError(f"{path}: job {index} has no key")
        if "workflow" in job:
            checked_api_format(job["workflow"], f"job {job['key']!r}'s workflow")
    return data


def job_inputs(body: Mapping[str, Any], flags: Mapping[str, Path]) -> list[JobInput]:
    """Which loader of which job each file goes to ({"video.12": file}); every target checked."""
    workflows = {job["key"]: job.get("workflow") for job in body["jobs"]}
    found = []
    for target, path in flags.items():
        key, dot, node = target.partition(".")
        if not dot or key not in workflows:
            raise WorkflowError(f"--input {target}: expected KEY.NODE=FILE with one of the keys {', '.join(workflows)}")
        if not isinstance(workflows[key], Mapping):
            raise WorkflowError(f"--input {target}: job {key!r} has no workflow to set a file in")
        (binding,) = input_bindings(workflows[key], {node: path})
        found.append(JobInput(key, binding))
    return found


def with_assets(body: Mapping[str, Any], references: list[tuple[JobInput, str]]) -> dict[str, Any]:
    """A copy of the request with each input's loader set to its asset reference."""
    result = copy.deepcopy(dict(body))
    for job in result["jobs"]:
        mine = [(item.binding, reference) for item, reference in references if item.key == job["key"]]
        if mine:
            job["workflow"] = with_references(job["workflow"], mine)
    return result


def pipeline_states(
    api: ApiSession, pipeline_id: str, *, poll_seconds: float, timeout: float | None
) -> Iterator[dict[str, Any]]:
    """The pipeline as GET /api/pipelines/<id>/ shows it, every `poll_seconds`, until it ends."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        state: dict[str, Any] = api.json("GET", f"api/pipelines/{pipeline_id}/", what=f"pipeline {pipeline_id}")
        yield state
        if state.get("status") in FINAL:
            return
        if deadline is not None and time.monotonic() > deadline:
            raise WaitTimeout(f"pipeline {pipeline_id} is still {state.get('status')} after {timeout:g}s")
        time.sleep(poll_seconds)


def pipeline_table(state: Mapping[str, Any], now: datetime) -> Table:
    """Its jobs, each after the jobs it reads: key, status, progress, what it reads, why it failed."""
    table = Table(title=_title(state, now), title_justify="left")
    for name in ("key", "job", "status", "progress", "reads", "failure"):
        table.add_column(name, justify="right" if name == "progress" else "left")
    for job in state.get("jobs") or ():
        failure = f"{job.get('failure_category')}: {one_line(str(job.get('error_message') or ''), 80)}"
        table.add_row(
            one_line(str(job.get("key")), 40),
            str(job.get("id"))[:8],
            str(job.get("status")),
            f"{float(job.get('progress_percent') or 0):.1f}%",
            ", ".join(one_line(str(key), 40) for key in job.get("upstream") or ()) or "-",
            failure if job.get("failure_category") else "",
        )
    return table


def _title(state: Mapping[str, Any], now: datetime) -> str:
    name = one_line(str(state.get("name") or state.get("id")), 60)
    title = f"pipeline {name}: {state.get('status')} {float(state.get('progress_percent') or 0):.1f}%"
    eta = state.get("eta") or {}
    finish_at = _moment(eta.get("finish_at"))
    if finish_at is not None and state.get("status") not in FINAL:
        left = max(0, round((finish_at - now).total_seconds()))
        title += f"  ETA ~{left // 60}m {left % 60:02d}s of run time (estimate)"
    return title


def _moment(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None
