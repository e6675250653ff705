"""Workflow templates: a ComfyUI workflow published under a name, with a few typed inputs mapped to
its nodes' inputs, that anyone may run without editing JSON.

A template has numbered versions. A version never changes once published (nothing here updates
one): publishing the same name again makes the next number, and earlier versions stay runnable by
number. A job keeps the workflow it was filled with, and the template's name and version
(jobs.models.Job.template_name / template_version), so a new version never changes a job already
submitted.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

# A name as it appears in URLs (`/api/templates/<name>/`).
TEMPLATE_NAME_PATTERN = r"[a-z0-9][a-z0-9_-]{0,63}"


class WorkflowTemplate(models.Model):
    name = models.CharField(max_length=64, unique=True, help_text="lower-case letters, digits, - and _")
    description = models.TextField(blank=True)
    staff_only = models.BooleanField(default=False, help_text="only staff may see and run it")
    latest_version = models.PositiveIntegerField(default=0, help_text="the number of its newest version")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, help_text="when its latest version was published")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class TemplateVersion(models.Model):
    """One published version: immutable."""

    template = models.ForeignKey(WorkflowTemplate, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    job_type = models.CharField(max_length=32)
    workflow = models.JSONField(help_text="ComfyUI API format, as published")
    inputs = models.JSONField(
        help_text="the typed inputs and the node inputs each one sets (workflow_templates.inputs)"
    )
    notes = models.TextField(blank=True, help_text="what changed in this version")
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    published_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["template", "-number"]
        constraints = [models.UniqueConstraint(fields=["template", "number"], name="templateversion_unique_number")]

    def __str__(self) -> str:
        return f"{self.template.name} v{self.number}"
