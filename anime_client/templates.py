"""Workflow templates on the client side: a version and its typed inputs as the API describes them,
`--set NAME=VALUE` turned into the JSON each kind takes, and `--input NAME=FILE` checked before any
upload.

The server checks every value (kind, bounds, choices, whose asset) and says what is wrong with a
400 naming the input; here a value is only given the JSON type its kind takes, so `--set seed=42`
is sent as the number 42. Text that is not a value of the kind (`--set seed=abc`) is sent as it
is, and the server's refusal says what the input must be.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from anime_client.errors import WorkflowError
from anime_client.terminal_text import one_line

ASSET_KINDS = frozenset({"image", "mask", "video", "audio"})
BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
TEXT_SHOWN_CHARS = 60


@dataclass(frozen=True)
class TemplateInput:
    name: str
    kind: str  # image, mask, video, audio, text, int, float, choice, bool
    required: bool
    default: Any
    minimum: int | float | None
    maximum: int | float | None
    max_length: int | None
    choices: tuple[str, ...]
    description: str

    @property
    def is_asset(self) -> bool:
        return self.kind in ASSET_KINDS

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> TemplateInput:
        return cls(
            name=str(data["name"]),
            kind=str(data.get("kind") or ""),
            required=bool(data.get("required", "default" not in data)),
            default=data.get("default"),
            minimum=data.get("min"),
            maximum=data.get("max"),
            max_length=data.get("max_length"),
            choices=tuple(str(choice) for choice in data.get("choices") or ()),
            description=str(data.get("description") or ""),
        )


@dataclass(frozen=True)
class Template:
    """One version of a template: what `GET /api/templates/<name>/` (the latest) or
    `.../versions/<n>/` answers."""

    name: str
    version: int
    latest_version: int
    job_type: str
    description: str
    inputs: tuple[TemplateInput, ...]
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    def input(self, name: str) -> TemplateInput | None:
        return next((spec for spec in self.inputs if spec.name == name), None)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Template:
        return cls(
            name=str(data["name"]),
            version=int(data.get("version") or 0),
            latest_version=int(data.get("latest_version") or 0),
            job_type=str(data.get("job_type") or ""),
            description=str(data.get("description") or ""),
            inputs=tuple(TemplateInput.from_api(item) for item in data.get("inputs") or ()),
            raw=data,
        )


def parse_set_flag(flag: str) -> tuple[str, str]:
    """`--set NAME=VALUE` as (name, text); the value may be empty or hold `=` itself."""
    name, sep, value = flag.partition("=")
    if not sep or not name.strip():
        raise WorkflowError(f"--set {flag!r}: expected INPUT=VALUE, e.g. seed=42 or prompt='a fox in the snow'")
    return name.strip(), value


def typed_value(spec: TemplateInput | None, text: str) -> Any:
    """`text` as the JSON type the input's kind takes: a number for int and float, true or false for
    bool, the text itself otherwise (text, choice, an asset id, an input the template lacks)."""
    kind = spec.kind if spec is not None else ""
    if kind == "int":
        try:
            return int(text)
        except ValueError:
            return text
    if kind == "float":
        try:
            number = float(text)
        except ValueError:
            return text
        return number if math.isfinite(number) else text  # JSON has no NaN or infinity
    if kind == "bool":
        return BOOL_WORDS.get(text.strip().lower(), text)
    return text


def run_inputs(
    template: Template, set_flags: Sequence[str], input_flags: Sequence[tuple[str, Path]]
) -> tuple[dict[str, Any], dict[str, Path]]:
    """The values of `--set` flags (typed by the template's inputs) and the files of `--input` flags,
    each input named once. A file must exist and go to one of the template's file inputs: checked
    before the first upload, so a typo leaves no uploaded asset and no job behind."""
    values: dict[str, Any] = {}
    for flag in set_flags:
        name, text = parse_set_flag(flag)
        if name in values:
            raise WorkflowError(f"--set {name} is given twice")
        values[name] = typed_value(template.input(name), text)
    files: dict[str, Path] = {}
    for name, path in input_flags:
        if name in values or name in files:
            raise WorkflowError(f"input {name!r} is given twice (--set and --input, or --input twice)")
        spec = template.input(name)
        if spec is None or not spec.is_asset:
            file_inputs = ", ".join(f"{s.name} ({s.kind})" for s in template.inputs if s.is_asset) or "none"
            if spec is None:
                why = f"{template.name} v{template.version} has no input {name!r}"
            else:
                why = f"{name!r} is a {spec.kind} input, not a file (--set {name}=VALUE)"
            raise WorkflowError(f"--input {name}={path}: {why}; its file inputs: {file_inputs}")
        if not path.is_file():
            raise WorkflowError(f"--input {name}={path}: no such file")
        files[name] = path
    return values, files


def templates_table(templates: Sequence[Mapping[str, Any]]) -> Table:
    table = Table()
    for column in ("template", "latest", "staff only", "description"):
        table.add_column(column, justify="right" if column == "latest" else "left", no_wrap=column == "template")
    for item in templates:
        table.add_row(
            one_line(str(item.get("name") or ""), 64),
            f"v{item.get('latest_version')}",
            "yes" if item.get("staff_only") else "",
            one_line(str(item.get("description") or ""), 80),
        )
    return table


def inputs_table(template: Template) -> Table:
    """Each input: its kind, required or its default, its bounds or choices, its description."""
    table = Table(title=f"{one_line(template.name, 64)} v{template.version} ({one_line(template.job_type, 20)})")
    for column in ("input", "kind", "default", "accepts", "description"):
        table.add_column(column, no_wrap=column == "input")
    for spec in template.inputs:
        default = "required" if spec.required else one_line(_shown(spec.default), TEXT_SHOWN_CHARS)
        table.add_row(spec.name, spec.kind, default, accepted_values(spec), one_line(spec.description, 80))
    return table


def accepted_values(spec: TemplateInput) -> str:
    """e.g. `0 to 4294967295`, `at most 200 characters`, `euler, dpmpp_2m`, `a file (--input)`."""
    if spec.is_asset:
        return f"a file (--input {spec.name}=FILE) or one of your asset ids"
    if spec.kind in ("int", "float"):
        if spec.minimum is not None and spec.maximum is not None:
            return f"{_shown(spec.minimum)} to {_shown(spec.maximum)}"
        if spec.minimum is not None:
            return f"at least {_shown(spec.minimum)}"
        if spec.maximum is not None:
            return f"at most {_shown(spec.maximum)}"
        return "a whole number" if spec.kind == "int" else "a number"
    if spec.kind == "text":
        return f"text, at most {spec.max_length} characters" if spec.max_length else "text"
    if spec.kind == "choice":
        return one_line(", ".join(spec.choices), 200)
    if spec.kind == "bool":
        return "true or false"
    return ""


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)
