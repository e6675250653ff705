"""A template version's inputs as JSON Schema (draft 2020-12): what `"inputs"` of a run must be.

The same rules as workflow_templates.inputs, for clients and forms to read; the server checks runs
with its own code, and its 400s name the input.
"""

from __future__ import annotations

from typing import Any

from workflow_templates.inputs import ASSET_KINDS, TemplateInput

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
# An asset id, or the reference a workflow would hold: "<uuid>" or "asset:<uuid>".
ASSET_ID_PATTERN = r"^(asset:)?[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
# Or another job's output (assets.references): "output:<job id or pipeline key>/<n>".
OUTPUT_REFERENCE_PATTERN = r"^output:[^/\s]{1,64}(/[0-9]{1,4})?$"


def input_schema(title: str, specs: list[TemplateInput]) -> dict[str, Any]:
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": title,
        "type": "object",
        "additionalProperties": False,
        "required": [spec.name for spec in specs if spec.required],
        "properties": {spec.name: property_schema(spec) for spec in specs},
    }


def property_schema(spec: TemplateInput) -> dict[str, Any]:
    schema: dict[str, Any] = {"x-kind": spec.kind}
    if spec.is_asset:
        media = ASSET_KINDS[spec.kind]
        schema.update(
            type="string",
            pattern=f"{ASSET_ID_PATTERN}|{OUTPUT_REFERENCE_PATTERN}",
            description=_joined(
                spec.description,
                f"the id of one of your {media} assets (POST /api/assets/), or another job's output "
                '("output:<job id>/<n>")',
            ),
        )
        return schema
    if spec.description:
        schema["description"] = spec.description
    if spec.kind == "text":
        schema.update(type="string", maxLength=spec.max_length)
    elif spec.kind in ("int", "float"):
        schema["type"] = "integer" if spec.kind == "int" else "number"
        if spec.minimum is not None:
            schema["minimum"] = spec.minimum
        if spec.maximum is not None:
            schema["maximum"] = spec.maximum
    elif spec.kind == "choice":
        schema.update(type="string", enum=list(spec.choices))
    else:
        schema["type"] = "boolean"
    if not spec.required:
        schema["default"] = spec.default
    return schema


def _joined(*parts: str) -> str:
    return "; ".join(part for part in parts if part)
