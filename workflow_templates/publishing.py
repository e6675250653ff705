"""What a workflow and its inputs must be to be published as a template.

- The workflow passes what `POST /api/jobs/` checks (jobs.workflow_validation): format, size, node
  classes, links, cost.
- Every input's targets exist: the node, and the input among its inputs, holding a value (not a
  link to another node's output); no node input is set by two template inputs.
- A loader's file input (assets.references.LOADER_KINDS) is set only by an asset input of a kind it
  reads; an asset named in the workflow itself would be the publisher's, which no one else may use.
- Defaults are within their bounds (workflow_templates.inputs), and the workflow with every default
  in place (an asset input's placeholder reference) passes the same checks again.
"""

from __future__ import annotations

import uuid
from typing import Any

from assets.references import LOADER_KINDS, asset_references
from comfyui.workflow import is_link
from jobs.workflow_validation import workflow_problems
from workflow_templates.inputs import ASSET_KINDS, Problems, Target, TemplateInput, filled_workflow

# Stands for a run's asset while the defaults are checked: a reference like any other, to no asset.
PLACEHOLDER_ASSET = uuid.UUID(int=0)


def publish_problems(workflow: Any, specs: list[TemplateInput]) -> tuple[Problems, list[str]]:
    """The problems of each input (keyed by its name), and of the workflow."""
    problems = workflow_problems(workflow)
    if problems:
        return {}, problems
    graph: dict[str, Any] = {str(node_id): node for node_id, node in workflow.items()}
    input_problems: Problems = {}
    setters: dict[Target, str] = {}
    for spec in specs:
        found = [problem for target in spec.targets if (problem := _target_problem(spec, target, graph, setters))]
        if found:
            input_problems[spec.name] = found
    if input_problems:
        return input_problems, []
    return {}, _defaults_problems(graph, specs)


def _target_problem(
    spec: TemplateInput, target: Target, graph: dict[str, Any], setters: dict[Target, str]
) -> str | None:
    node_id, input_name = target
    node = graph.get(node_id)
    if node is None:
        return f"target [{node_id!r}, {input_name!r}]: the workflow has no node {node_id!r}"
    class_type = node["class_type"]
    inputs = node.get("inputs", {})
    where = f"node {node_id} ({class_type})"
    if input_name not in inputs:
        return f"{where} has no input {input_name!r}; its inputs are: {', '.join(map(str, inputs)) or 'none'}"
    if is_link(inputs[input_name]):
        return f"{where}: input {input_name!r} is linked to node {inputs[input_name][0]}; a template input sets a value"
    if target in setters:
        return f"{where}: input {input_name!r} is already set by the template input {setters[target]!r}"
    setters[target] = spec.name
    reads = LOADER_KINDS.get((class_type, input_name))
    if reads is None:
        return None
    if not spec.is_asset:
        return f"{where}: input {input_name!r} names a file; set it with an image, mask, video or audio input"
    if ASSET_KINDS[spec.kind] not in reads:
        return f"{where}: {class_type} reads {' or '.join(sorted(reads))} in {input_name!r}, not {spec.kind}"
    return None


def _defaults_problems(graph: dict[str, Any], specs: list[TemplateInput]) -> list[str]:
    values = {
        spec.name: PLACEHOLDER_ASSET if spec.is_asset else spec.default
        for spec in specs
        if spec.is_asset or not spec.required
    }
    with_defaults = filled_workflow(graph, specs, values)
    set_by_inputs = {target for spec in specs if spec.is_asset for target in spec.targets}
    references, problems = asset_references(with_defaults)
    for reference in references:
        if (reference.node_id, reference.input_name) not in set_by_inputs:
            problems.append(
                f"{reference.label} names an asset of the publisher's; make it an asset input of the template, "
                "so that each run names one of the runner's own"
            )
    problems += [f"with the default inputs: {problem}" for problem in workflow_problems(with_defaults)]
    return problems
