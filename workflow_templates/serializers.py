from __future__ import annotations

from typing import Any

from django.conf import settings
from django.urls import reverse
from rest_framework import serializers

from jobs.dependencies import output_reference_problems
from jobs.labels import unique_tags
from jobs.serializers import JobLabelsSerializer, WorkflowField, labels_from
from jobs.workflow_validation import workflow_problems
from workflow_templates.inputs import (
    Problems,
    TemplateInput,
    filled_workflow,
    parse_inputs,
    run_values,
    stored_inputs,
)
from workflow_templates.models import TEMPLATE_NAME_PATTERN, TemplateVersion, WorkflowTemplate
from workflow_templates.publishing import publish_problems
from workflow_templates.schema import input_schema
from workflow_templates.selectors import asset_input_problems, template_version
from workflow_templates.services import TemplateRun

TEXT_MAX_CHARS = 5000


def _known_job_type(value: str) -> None:
    if value not in settings.JOB_TYPES:
        raise serializers.ValidationError(f"unknown job type {value!r}; expected one of {settings.JOB_TYPES}")


def _keyed(problems: Problems) -> Any:
    """Problems keyed by input name; those of the object as a whole (key "") as a plain list."""
    return problems.get("", problems)


class TemplatePublishSerializer(serializers.Serializer):
    name = serializers.RegexField(
        rf"^{TEMPLATE_NAME_PATTERN}$",
        error_messages={"invalid": "a lower-case letter or digit, then letters, digits, - or _ (at most 64)"},
    )
    job_type = serializers.CharField(max_length=32, validators=[_known_job_type])
    workflow = WorkflowField(help_text="ComfyUI API format, checked as POST /api/jobs/ checks it")
    inputs = serializers.JSONField(
        help_text='{"<name>": {"kind": "image|mask|video|audio|text|int|float|choice|bool", '
        '"targets": [["<node id>", "<input name>"]], "default", "min", "max", "max_length", "choices", '
        '"description"}}'
    )
    notes = serializers.CharField(max_length=TEXT_MAX_CHARS, required=False, allow_blank=True, default="")
    description = serializers.CharField(max_length=TEXT_MAX_CHARS, required=False, allow_blank=True)
    staff_only = serializers.BooleanField(required=False, help_text="only staff may see and run it")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        specs, problems = parse_inputs(attrs["inputs"])
        if problems:
            raise serializers.ValidationError({"inputs": _keyed(problems)})
        input_problems, problems_of_workflow = publish_problems(attrs["workflow"], specs)
        if input_problems:
            raise serializers.ValidationError({"inputs": input_problems})
        if problems_of_workflow:
            raise serializers.ValidationError({"workflow": problems_of_workflow})
        return {**attrs, "inputs": specs}


class CountedListField(serializers.ListField):
    """A list counted before any item is read (ListField's own max_length is checked after every
    item was validated): 1 to the number the setting `setting` holds, e.g. a batch's items."""

    def __init__(self, *, setting: str, whole: str, items: str, **kwargs: Any) -> None:
        self.setting, self.whole, self.items = setting, whole, items
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> list[Any]:
        limit = getattr(settings, self.setting)
        if isinstance(data, list) and not 1 <= len(data) <= limit:
            raise serializers.ValidationError(
                f"{self.whole} has 1 to {limit} {self.items} ({self.setting}), not {len(data)}"
            )
        return super().to_internal_value(data)


class TemplateRunItemSerializer(JobLabelsSerializer):
    """One job of a batch: its inputs (over the request's shared `inputs`) and its own labels."""

    inputs = serializers.JSONField(required=False, default=dict)


class TemplateRunSerializer(JobLabelsSerializer):
    """`inputs` for one job; or `batch` for a group of jobs, each item's inputs over the shared `inputs`.

    The view passes the template as the context's "template" and the runner as "user"; the checked
    runs come out as "runs" (workflow_templates.services.TemplateRun) and the version as "version".
    """

    inputs = serializers.JSONField(required=False, default=dict)
    batch = CountedListField(
        setting="TEMPLATE_BATCH_MAX", whole="a batch", items="items", child=TemplateRunItemSerializer(), required=False
    )
    # Bounded like the column it is looked up in: a number past it is a 400, not a database error.
    version = serializers.IntegerField(
        min_value=1, max_value=2**31 - 1, required=False, help_text="default: the latest"
    )
    priority = serializers.IntegerField(min_value=0, max_value=9, default=5)
    backend = serializers.CharField(max_length=64, required=False, allow_blank=True)

    def validate_backend(self, value: str) -> str | None:
        if value and value not in settings.COMFYUI_BACKENDS:
            raise serializers.ValidationError(
                f"unknown backend {value!r}; configured: {sorted(settings.COMFYUI_BACKENDS)}"
            )
        return value or None

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        template: WorkflowTemplate = self.context["template"]
        version = template_version(template, attrs.get("version"))
        if version is None:
            raise serializers.ValidationError(
                {"version": f"{template.name} has versions 1 to {template.latest_version}"}
            )
        specs = stored_inputs(version.inputs)
        if "batch" in attrs:
            runs = self._batch_runs(specs, attrs)
        else:
            values, problems = run_values(specs, attrs["inputs"])
            problems = problems or asset_input_problems(specs, [values], self.context["user"])[0]
            if problems:
                raise serializers.ValidationError({"inputs": _keyed(problems)})
            runs = [TemplateRun(values, labels_from(attrs))]
        self._check_filled(version, runs, batch="batch" in attrs)
        return {**attrs, "version": version, "runs": runs}

    def _batch_runs(self, specs: list[TemplateInput], attrs: dict[str, Any]) -> list[TemplateRun]:
        shared = attrs["inputs"]
        if not isinstance(shared, dict):
            raise serializers.ValidationError({"inputs": ["must be an object mapping input names to values"]})
        checked = []
        for item in attrs["batch"]:
            own = item["inputs"]
            checked.append(run_values(specs, {**shared, **own} if isinstance(own, dict) else own))
        errors: list[dict[str, Any]] = [{"inputs": _keyed(problems)} if problems else {} for _, problems in checked]
        owned = asset_input_problems(specs, [values for values, _ in checked], self.context["user"])
        for place, problems in enumerate(owned):
            if problems and not errors[place]:
                errors[place] = {"inputs": problems}
        for place, item in enumerate(attrs["batch"]):
            tags = unique_tags(list(attrs["tags"]) + list(item["tags"]))
            if len(tags) > settings.JOB_MAX_TAGS and not errors[place]:
                errors[place] = {"tags": [f"with the batch's tags, at most {settings.JOB_MAX_TAGS}, not {len(tags)}"]}
        if any(errors):
            raise serializers.ValidationError({"batch": errors})
        return [
            TemplateRun(values, labels_from(item)) for (values, _), item in zip(checked, attrs["batch"], strict=True)
        ]

    def _check_filled(self, version: TemplateVersion, runs: list[TemplateRun], *, batch: bool) -> None:
        """The filled workflow passes what POST /api/jobs/ checks (bounds such as pixels or frames may
        depend on several inputs together). Its asset references need no second look: each is at an
        asset input's target, checked above, since publishing refused any other; its output references
        are checked here, against the jobs the runner may see."""
        specs = stored_inputs(version.inputs)
        filled = [filled_workflow(version.workflow, specs, run.values) for run in runs]
        user = self.context["user"]
        # An output reference ("output:<job id>/<n>") names a job the runner may see (jobs.dependencies).
        errors = [workflow_problems(graph) or output_reference_problems(graph, user) for graph in filled]
        if not any(errors):
            return
        if not batch:
            raise serializers.ValidationError({"workflow": errors[0]})
        raise serializers.ValidationError(
            {"batch": [{"workflow": problems} if problems else {} for problems in errors]}
        )


class TemplateSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()

    class Meta:
        model = WorkflowTemplate
        fields = ["name", "description", "staff_only", "latest_version", "created_at", "updated_at", "url"]

    def get_url(self, template: WorkflowTemplate) -> str:
        return reverse("template-detail", kwargs={"name": template.name})


class TemplateVersionSerializer(serializers.ModelSerializer):
    """One version: its inputs (and as JSON Schema), its workflow, and where to run it."""

    name = serializers.CharField(source="template.name", read_only=True)
    description = serializers.CharField(source="template.description", read_only=True)
    staff_only = serializers.BooleanField(source="template.staff_only", read_only=True)
    latest_version = serializers.IntegerField(source="template.latest_version", read_only=True)
    version = serializers.IntegerField(source="number", read_only=True)
    published_by = serializers.CharField(source="published_by.username", default=None, read_only=True, allow_null=True)
    input_schema = serializers.SerializerMethodField(help_text="what a run's `inputs` must be, as JSON Schema")
    run_url = serializers.SerializerMethodField()
    jobs_url = serializers.SerializerMethodField()

    class Meta:
        model = TemplateVersion
        fields = [
            "name",
            "version",
            "latest_version",
            "description",
            "staff_only",
            "job_type",
            "notes",
            "published_by",
            "published_at",
            "inputs",
            "input_schema",
            "workflow",
            "run_url",
            "jobs_url",
        ]

    def get_input_schema(self, version: TemplateVersion) -> dict[str, Any]:
        title = f"inputs of {version.template.name} v{version.number}"
        return input_schema(title, stored_inputs(version.inputs))

    def get_run_url(self, version: TemplateVersion) -> str:
        return reverse("template-jobs", kwargs={"name": version.template.name})

    def get_jobs_url(self, version: TemplateVersion) -> str:
        url = reverse("job-list")
        return f"{url}?template={version.template.name}&template_version={version.number}"


class TemplateVersionBriefSerializer(serializers.ModelSerializer):
    version = serializers.IntegerField(source="number", read_only=True)
    published_by = serializers.CharField(source="published_by.username", default=None, read_only=True, allow_null=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = TemplateVersion
        fields = ["version", "job_type", "notes", "published_by", "published_at", "url"]

    def get_url(self, version: TemplateVersion) -> str:
        return reverse("template-version", kwargs={"name": version.template.name, "number": version.number})
