"""Workflow templates in the admin: each template with its versions; a version's workflow, inputs and
input schema, read-only (a version never changes), and a link to the jobs that ran it.

Publishing goes through the API (`POST /api/templates/`), which checks the workflow and the inputs;
the admin may change what belongs to the template as a whole (description, staff only).
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from workflow_templates.inputs import stored_inputs
from workflow_templates.models import TemplateVersion, WorkflowTemplate
from workflow_templates.schema import input_schema


def _jobs_link(name: str, number: int | None = None) -> SafeString:
    query = f"?template_name={name}" + (f"&template_version={number}" if number is not None else "")
    return format_html('<a href="{}{}">jobs</a>', reverse("admin:jobs_job_changelist"), query)


def _pretty(data: Any) -> SafeString:
    return format_html('<pre class="traceback">{}</pre>', json.dumps(data, indent=2, sort_keys=True))


class TemplateVersionInline(admin.TabularInline):
    model = TemplateVersion
    fields = ("version_link", "job_type", "notes", "published_by", "published_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["-number"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="version")
    def version_link(self, version: TemplateVersion) -> str:
        url = reverse("admin:workflow_templates_templateversion_change", args=[version.pk])
        return format_html('<a href="{}">v{}</a>', url, version.number)


@admin.register(WorkflowTemplate)
class WorkflowTemplateAdmin(admin.ModelAdmin):
    list_display = ["name", "latest_version", "staff_only", "description", "updated_at", "jobs"]
    list_filter = ["staff_only"]
    search_fields = ["name", "description"]
    fields = ["name", "description", "staff_only", "latest_version", "created_by", "created_at", "updated_at"]
    readonly_fields = ["name", "latest_version", "created_by", "created_at", "updated_at"]
    inlines = [TemplateVersionInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # POST /api/templates/ publishes, after checking the workflow and its inputs

    def has_delete_permission(self, request: HttpRequest, obj: WorkflowTemplate | None = None) -> bool:
        return False  # its versions stay runnable by number

    @admin.display(description="jobs")
    def jobs(self, template: WorkflowTemplate) -> SafeString:
        return _jobs_link(template.name)


@admin.register(TemplateVersion)
class TemplateVersionAdmin(admin.ModelAdmin):
    list_display = ["__str__", "job_type", "published_by", "published_at", "jobs"]
    list_filter = ["job_type"]
    search_fields = ["template__name"]
    list_select_related = ["template", "published_by"]
    fields = (
        "template",
        "number",
        "job_type",
        "notes",
        "published_by",
        "published_at",
        "jobs",
        "inputs_table",
        "schema_pretty",
        "workflow_pretty",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: TemplateVersion | None = None) -> bool:
        return False  # a published version never changes

    def has_delete_permission(self, request: HttpRequest, obj: TemplateVersion | None = None) -> bool:
        return False

    @admin.display(description="jobs")
    def jobs(self, version: TemplateVersion) -> SafeString:
        return _jobs_link(version.template.name, version.number)

    @admin.display(description="inputs")
    def inputs_table(self, version: TemplateVersion) -> SafeString:
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    spec.name,
                    spec.kind,
                    ", ".join(f"node {node} {name!r}" for node, name in spec.targets),
                    "required" if spec.required else json.dumps(spec.default),
                    _bounds(spec.minimum, spec.maximum, spec.max_length, spec.choices),
                )
                for spec in stored_inputs(version.inputs)
            ),
        )
        head = "<tr><th>input</th><th>kind</th><th>sets</th><th>default</th><th>bounds</th></tr>"
        return format_html('<table class="template-inputs">{}{}</table>', SafeString(head), rows)

    @admin.display(description="input schema (JSON Schema)")
    def schema_pretty(self, version: TemplateVersion) -> SafeString:
        title = f"inputs of {version.template.name} v{version.number}"
        return _pretty(input_schema(title, stored_inputs(version.inputs)))

    @admin.display(description="workflow (ComfyUI API format)")
    def workflow_pretty(self, version: TemplateVersion) -> SafeString:
        return _pretty(version.workflow)


def _bounds(minimum: Any, maximum: Any, max_length: int | None, choices: tuple[str, ...]) -> str:
    if choices:
        return ", ".join(choices)
    if max_length is not None:
        return f"at most {max_length} characters"
    if minimum is None and maximum is None:
        return ""
    return f"{'' if minimum is None else minimum} .. {'' if maximum is None else maximum}"
