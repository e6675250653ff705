"""Configuration checks: a bad template setting stops the start with a clear message."""

from django.conf import settings
from django.core.checks import Error, register


@register()
def template_limits_check(app_configs, **kwargs) -> list[Error]:
    return [
        Error(f"{name} must be a positive whole number, not {getattr(settings, name)!r}", id="workflow_templates.E001")
        for name in ("TEMPLATE_BATCH_MAX",)
        if not isinstance(getattr(settings, name), int) or getattr(settings, name) < 1
    ]
