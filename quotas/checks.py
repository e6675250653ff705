"""Configuration checks: a quota setting that is not a positive number (or unset) stops the start."""

from django.conf import settings
from django.core.checks import Error, register

LIMIT_SETTINGS = ("QUOTA_MAX_RUNNING_JOBS", "QUOTA_MAX_WAITING_JOBS", "QUOTA_GPU_SECONDS_PER_DAY")
OVER_LIMIT_CHOICES = ("reject", "wait")


@register()
def quota_settings_check(app_configs, **kwargs) -> list[Error]:
    errors = [
        Error(
            f"{name} must be a positive whole number or unset (unlimited), not {getattr(settings, name)!r}",
            id="quotas.E001",
        )
        for name in LIMIT_SETTINGS
        if getattr(settings, name) is not None
        and (not isinstance(getattr(settings, name), int) or getattr(settings, name) < 1)
    ]
    if settings.QUOTA_OVER_LIMIT not in OVER_LIMIT_CHOICES:
        errors.append(
            Error(
                f"QUOTA_OVER_LIMIT must be one of {', '.join(OVER_LIMIT_CHOICES)}, not {settings.QUOTA_OVER_LIMIT!r}",
                id="quotas.E002",
            )
        )
    return errors
