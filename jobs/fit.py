"""Which backends can run a job: its requested backend, the labels it requires, and the node classes
and model files its workflow names, against what each backend has (fleet.catalog).

A backend whose /object_info is not known yet (never probed, or unreachable since it started) is
assumed to have every node and model: refusing every submit until a probe ran would stop a fresh
deployment, and a job it cannot run fails there as ComfyUI says (`missing_model`, `invalid_workflow`)
and is retried elsewhere only by hand. Labels and a requested backend are known from settings and
always judged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rest_framework.exceptions import ValidationError

from fleet.catalog import MODEL_FILE_EXTENSIONS, BackendFacts

MAX_PROBLEMS_NAMED = 10


@dataclass(frozen=True)
class JobNeeds:
    """What a job asks of a backend."""

    requested_backend: str
    labels: frozenset[str]
    node_classes: frozenset[str]
    model_files: frozenset[str]

    def stored(self) -> dict[str, list[str]]:
        return {"nodes": sorted(self.node_classes), "models": sorted(self.model_files)}


def workflow_needs(workflow: dict[str, Any], *, requested_backend: str = "", labels: Iterable[str] = ()) -> JobNeeds:
    classes: set[str] = set()
    files: set[str] = set()
    for node in workflow.values():
        if not isinstance(node, dict):
            continue
        if isinstance(node.get("class_type"), str):
            classes.add(node["class_type"])
        inputs = node.get("inputs")
        if isinstance(inputs, dict):
            files.update(
                value
                for value in inputs.values()
                if isinstance(value, str) and value.lower().endswith(MODEL_FILE_EXTENSIONS)
            )
    return JobNeeds(requested_backend or "", frozenset(labels), frozenset(classes), frozenset(files))


def job_needs(requested_backend: str, requires: Sequence[str], needs: dict[str, Any]) -> JobNeeds:
    """A job's needs as its row stores them."""
    return JobNeeds(
        requested_backend,
        frozenset(requires),
        frozenset(needs.get("nodes") or ()),
        frozenset(needs.get("models") or ()),
    )


def missing_on(needs: JobNeeds, backend: BackendFacts) -> list[str]:
    """What the backend lacks for the job, each named ("node class X", "model file Y", "label Z");
    empty when it can run it (whether it is in service or not)."""
    if needs.requested_backend and needs.requested_backend != backend.name:
        return [f"backend {needs.requested_backend}"]
    missing = [f"label {label}" for label in sorted(needs.labels - backend.labels)]
    if backend.node_classes is not None:
        missing += [f"node class {name}" for name in sorted(needs.node_classes - backend.node_classes)]
    if backend.model_files is not None:
        missing += [f"model file {name}" for name in sorted(needs.model_files - backend.model_files)]
    return missing


def fits(needs: JobNeeds, backend: BackendFacts) -> bool:
    return not missing_on(needs, backend)


def fit_check(needs: JobNeeds, backends: Sequence[BackendFacts]) -> None:
    """A 400 at submit when no configured backend could ever run the job, naming what each lacks.
    Draining or unreachable backends still count: the job waits for them (README, How a job flows)."""
    lacking = {backend.name: missing_on(needs, backend) for backend in backends}
    if not lacking or all(lacking.values()):
        raise ValidationError({"workflow": [unfit_message(lacking)]})


def unfit_message(lacking: dict[str, list[str]]) -> str:
    if not lacking:
        return "no backend is configured"
    parts = []
    for name, missing in lacking.items():
        named = ", ".join(missing[:MAX_PROBLEMS_NAMED])
        more = len(missing) - MAX_PROBLEMS_NAMED
        parts.append(f"{name} lacks {named}" + (f" and {more} more" if more > 0 else ""))
    return "no configured backend can run this job: " + "; ".join(parts)


def waiting_for(needs: JobNeeds) -> str:
    """What a waiting job waits for, in words: "a backend with label video" and so on."""
    wants = []
    if needs.requested_backend:
        wants.append(f"backend {needs.requested_backend}")
    wants += [f"label {label}" for label in sorted(needs.labels)]
    if not wants:
        return "a free backend"
    return "a free backend with " + ", ".join(wants)
