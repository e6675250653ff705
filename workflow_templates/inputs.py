"""A template's typed inputs: what each may be, which node inputs it sets, and the values a run gives.

Kinds:
- `image`, `mask`, `video`, `audio`: one of the runner's own assets, by id (`"<id>"` or `"asset:<id>"`).
  It becomes `"asset:<id>"` in each node input it maps to (assets.references), which the GPU worker
  uploads to its ComfyUI. Or another job's output, `"output:<job id>/<n>"` (in a pipeline request
  `"output:<key>/<n>"`), kept as it is: the job then waits for that one (jobs.dependencies). No
  default: a run names its file.
- `text`: a string of at most `max_length` characters (a prompt).
- `int`, `float`: a number, within `min`..`max` where they are given (a seed, frames, steps, a strength).
- `choice`: one of `choices` (a checkpoint, a sampler, a scheduler).
- `bool`: true or false.

An input without a default is required. Each sets one or more node inputs, `[node_id, input_name]`.
Plain Python: publishing (workflow_templates.publishing) checks the workflow around the inputs, a run
(workflow_templates.selectors) the runner's assets.
"""

from __future__ import annotations

import copy
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from assets.references import ASSET_PREFIX, OUTPUT_PREFIX, output_reference

# Each asset kind and the kind of asset (assets.models.AssetKind) it takes: a mask is an image.
ASSET_KINDS: dict[str, str] = {"image": "image", "mask": "image", "video": "video", "audio": "audio"}
KINDS = (*ASSET_KINDS, "text", "int", "float", "choice", "bool")
COMMON_FIELDS = frozenset({"kind", "targets", "description", "default"})
KIND_FIELDS: dict[str, frozenset[str]] = {
    "text": frozenset({"max_length"}),
    "int": frozenset({"min", "max"}),
    "float": frozenset({"min", "max"}),
    "choice": frozenset({"choices"}),
}

INPUT_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_INPUTS = 64
MAX_TARGETS = 32
MAX_CHOICES = 1000
CHOICE_MAX_CHARS = 1000
DESCRIPTION_MAX_CHARS = 2000
TEXT_DEFAULT_MAX_LENGTH = 10_000
TEXT_MAX_LENGTH = 100_000
# ComfyUI's INT inputs go up to 0xFFFFFFFFFFFFFFFF (a seed); nothing it reads goes below -2**63.
INT_LOWEST = -(2**63)
INT_HIGHEST = 2**64 - 1

Target = tuple[str, str]
Problems = dict[str, list[str]]


@dataclass(frozen=True)
class TemplateInput:
    name: str
    kind: str
    targets: tuple[Target, ...]
    description: str = ""
    default: Any = None  # None: the input is required
    minimum: int | float | None = None
    maximum: int | float | None = None
    max_length: int | None = None
    choices: tuple[str, ...] = field(default=())

    @property
    def required(self) -> bool:
        return self.default is None

    @property
    def is_asset(self) -> bool:
        return self.kind in ASSET_KINDS

    def to_json(self) -> dict[str, Any]:
        """As a version stores it, and as the API shows it."""
        data: dict[str, Any] = {"name": self.name, "kind": self.kind, "targets": [list(t) for t in self.targets]}
        if self.description:
            data["description"] = self.description
        if self.kind in ("int", "float"):
            data.update({"min": self.minimum, "max": self.maximum})
        if self.kind == "text":
            data["max_length"] = self.max_length
        if self.kind == "choice":
            data["choices"] = list(self.choices)
        data["required"] = self.required
        if not self.required:
            data["default"] = self.default
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TemplateInput:
        """From a stored version (checked when it was published)."""
        return cls(
            name=data["name"],
            kind=data["kind"],
            targets=tuple((str(node), str(name)) for node, name in data["targets"]),
            description=data.get("description", ""),
            default=data.get("default"),
            minimum=data.get("min"),
            maximum=data.get("max"),
            max_length=data.get("max_length"),
            choices=tuple(data.get("choices", ())),
        )


def stored_inputs(data: Any) -> list[TemplateInput]:
    return [TemplateInput.from_json(item) for item in data]


# --- publishing: the specs ------------------------------------------------------------------------


def parse_inputs(raw: Any) -> tuple[list[TemplateInput], Problems]:
    """The inputs a publisher described, `{"<name>": {"kind": ..., "targets": [[node, input]], ...}}`,
    and the problems of each (keyed by input name; `""` for the object as a whole)."""
    if not isinstance(raw, dict):
        return [], {"": ['must be an object mapping input names to {"kind": ..., "targets": [[node_id, input]]}']}
    if len(raw) > MAX_INPUTS:
        return [], {"": [f"at most {MAX_INPUTS} inputs, not {len(raw)}"]}
    specs: list[TemplateInput] = []
    problems: Problems = {}
    for name, spec in raw.items():
        parsed, spec_problems = _parse_one(str(name), spec)
        if spec_problems:
            problems[str(name)] = spec_problems
        elif parsed is not None:
            specs.append(parsed)
    return specs, problems


def _parse_one(name: str, spec: Any) -> tuple[TemplateInput | None, list[str]]:
    if not INPUT_NAME.fullmatch(name):
        return None, ["an input name is a lower-case letter, then letters, digits or _ (at most 64)"]
    if not isinstance(spec, dict):
        return None, ['must be an object: {"kind": ..., "targets": [[node_id, input_name]], ...}']
    kind = spec.get("kind")
    if kind not in KINDS:
        return None, [f"kind must be one of {', '.join(KINDS)}, not {kind!r}"]
    unknown = sorted(set(spec) - COMMON_FIELDS - KIND_FIELDS.get(kind, frozenset()))
    if unknown:
        allowed = sorted(COMMON_FIELDS | KIND_FIELDS.get(kind, frozenset()))
        return None, [f"unknown field(s) {', '.join(map(repr, unknown))} for a {kind} input; it may have {allowed}"]
    problems: list[str] = []
    targets = _targets(spec.get("targets"), problems)
    description = spec.get("description", "")
    if not isinstance(description, str) or len(description) > DESCRIPTION_MAX_CHARS:
        problems.append(f"description must be text of at most {DESCRIPTION_MAX_CHARS} characters")
    bounds = _bounds(kind, spec, problems)
    if problems:
        return None, problems
    parsed = TemplateInput(name=name, kind=kind, targets=targets, description=description, **bounds)
    if "default" in spec and spec["default"] is not None:
        if parsed.is_asset:
            return None, ["an asset input has no default: each run names one of the runner's own assets"]
        default, problem = checked_value(parsed, spec["default"])
        if problem:
            return None, [f"default {problem}"]
        parsed = replace(parsed, default=default)
    return parsed, []


def _targets(raw: Any, problems: list[str]) -> tuple[Target, ...]:
    shape = 'targets must be a list of [node_id, input_name] pairs, e.g. [["3", "seed"]]'
    if not isinstance(raw, list) or not raw:
        problems.append(shape)
        return ()
    if len(raw) > MAX_TARGETS:
        problems.append(f"at most {MAX_TARGETS} targets, not {len(raw)}")
        return ()
    targets: list[Target] = []
    for target in raw:
        if not (isinstance(target, list) and len(target) == 2 and all(isinstance(part, str | int) for part in target)):
            problems.append(f"{shape}; {str(target)[:80]} is not one")
            return ()
        targets.append((str(target[0]), str(target[1])))
    if len(set(targets)) != len(targets):
        problems.append("the same node input is listed twice")
    return tuple(targets)


def _bounds(kind: str, spec: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    if kind == "text":
        max_length = spec.get("max_length", TEXT_DEFAULT_MAX_LENGTH)
        if not _whole(max_length) or not 1 <= max_length <= TEXT_MAX_LENGTH:
            problems.append(f"max_length must be a whole number from 1 to {TEXT_MAX_LENGTH}")
        return {"max_length": max_length}
    if kind in ("int", "float"):
        minimum, maximum = spec.get("min"), spec.get("max")
        for label, bound in (("min", minimum), ("max", maximum)):
            if bound is not None and not _number_of_kind(kind, bound):
                problems.append(f"{label} must be {_kind_words(kind)}, not {bound!r}")
        if problems:
            return {}
        if minimum is not None and maximum is not None and minimum > maximum:
            problems.append(f"min ({minimum}) is above max ({maximum})")
        cast = int if kind == "int" else float
        return {
            "minimum": None if minimum is None else cast(minimum),
            "maximum": None if maximum is None else cast(maximum),
        }
    if kind == "choice":
        choices = spec.get("choices")
        if (
            not isinstance(choices, list)
            or not 1 <= len(choices) <= MAX_CHOICES
            or not all(isinstance(choice, str) and 0 < len(choice) <= CHOICE_MAX_CHARS for choice in choices)
        ):
            problems.append(f"choices must be a list of 1 to {MAX_CHOICES} non-empty strings")
            return {}
        if len(set(choices)) != len(choices):
            problems.append("choices are listed twice")
        return {"choices": tuple(choices)}
    return {}


# --- values -------------------------------------------------------------------------------------


def checked_value(spec: TemplateInput, value: Any) -> tuple[Any, str | None]:
    """The value as the workflow gets it, or why it cannot be one for this input (no database: an
    asset value is only checked to be an id here)."""
    if spec.is_asset:
        return _asset_id(spec, value)
    if spec.kind in ("int", "float"):
        if not _number_of_kind(spec.kind, value):
            return None, f"must be {_kind_words(spec.kind)}, not {_shown(value)}"
        number = int(value) if spec.kind == "int" else float(value)
        if spec.minimum is not None and number < spec.minimum:
            return None, f"must be at least {spec.minimum} (got {_shown(value)})"
        if spec.maximum is not None and number > spec.maximum:
            return None, f"must be at most {spec.maximum} (got {_shown(value)})"
        return number, None
    if spec.kind == "text":
        if not isinstance(value, str):
            return None, f"must be text, not {_shown(value)}"
        if spec.max_length is not None and len(value) > spec.max_length:
            return None, f"must be at most {spec.max_length} characters (got {len(value)})"
        if "\x00" in value:
            return None, "may not contain a NUL character"
        if value.startswith(ASSET_PREFIX):
            return None, f'may not start with "{ASSET_PREFIX}" (an asset goes in an asset input)'
        return value, None
    if spec.kind == "choice":
        if not isinstance(value, str) or value not in spec.choices:
            shown = ", ".join(spec.choices[:20]) + (", ..." if len(spec.choices) > 20 else "")
            return None, f"must be one of {shown}; not {_shown(value)}"
        return value, None
    if not isinstance(value, bool):
        return None, f"must be true or false, not {_shown(value)}"
    return value, None


def _asset_id(spec: TemplateInput, value: Any) -> tuple[uuid.UUID | str | None, str | None]:
    if isinstance(value, str) and value.startswith(OUTPUT_PREFIX):
        parsed = output_reference(value)
        if parsed is None:
            return None, f'must be "output:<job id>/<n>" to read another job\'s output, not {_shown(value)}'
        return f"{OUTPUT_PREFIX}{parsed[0]}/{parsed[1]}", None
    if isinstance(value, str):
        try:
            return uuid.UUID(value.removeprefix(ASSET_PREFIX)), None
        except ValueError:
            pass
    return None, (
        f"must be the id of one of your {ASSET_KINDS[spec.kind]} assets (POST /api/assets/ answers it), "
        f"not {_shown(value)}"
    )


def run_values(specs: list[TemplateInput], given: Any) -> tuple[dict[str, Any], Problems]:
    """Every input's value for one run (the given one, else the default), and the problems keyed by
    input name: unknown, missing, of the wrong type or out of bounds."""
    if not isinstance(given, dict):
        return {}, {"": ["must be an object mapping input names to values"]}
    by_name = {spec.name: spec for spec in specs}
    problems: Problems = {}
    for name in given:
        if name not in by_name:
            known = ", ".join(by_name) or "none"
            problems[str(name)] = [f"unknown input; this template's inputs are: {known}"]
    values: dict[str, Any] = {}
    for spec in specs:
        if spec.name not in given or given[spec.name] is None:
            if spec.required:
                problems[spec.name] = [f"required ({_describe(spec)})"]
            else:
                values[spec.name] = spec.default
            continue
        value, problem = checked_value(spec, given[spec.name])
        if problem:
            problems[spec.name] = [problem]
        else:
            values[spec.name] = value
    return values, problems


def filled_workflow(workflow: dict[str, Any], specs: list[TemplateInput], values: Mapping[str, Any]) -> dict[str, Any]:
    """The workflow with each input's value in every node input it maps to (a copy)."""
    filled = copy.deepcopy(workflow)
    for spec in specs:
        if spec.name not in values:
            continue
        value = values[spec.name]
        if spec.is_asset and not str(value).startswith(OUTPUT_PREFIX):
            value = f"{ASSET_PREFIX}{value}"
        for node_id, input_name in spec.targets:
            filled[node_id]["inputs"][input_name] = value
    return filled


def _describe(spec: TemplateInput) -> str:
    if spec.is_asset:
        return f"the id of one of your {ASSET_KINDS[spec.kind]} assets"
    return {"text": "text", "int": "a whole number", "float": "a number", "choice": "one of its choices"}.get(
        spec.kind, "true or false"
    )


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number_of_kind(kind: str, value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if kind == "int":
        whole = isinstance(value, int) or (math.isfinite(value) and float(value).is_integer())
        return whole and INT_LOWEST <= value <= INT_HIGHEST
    return math.isfinite(value)


def _kind_words(kind: str) -> str:
    return f"a whole number from {INT_LOWEST} to {INT_HIGHEST}" if kind == "int" else "a finite number"


def _shown(value: Any) -> str:
    return repr(value)[:80]
