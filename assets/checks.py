"""Configuration checks: a bad asset limit stops the start with a clear message."""

from django.conf import settings
from django.core.checks import Error, register

# Each must let something through (anime_production/settings.py, "Input assets").
ASSET_LIMITS = (
    "ASSET_MAX_BYTES",
    "ASSET_MAX_PIXELS",
    "ASSET_MAX_FRAMES",
    "ASSET_MAX_SECONDS",
    "ASSET_MAX_PER_USER",
    "ASSET_MAX_BYTES_PER_USER",
)


@register()
def asset_limits_check(app_configs, **kwargs) -> list[Error]:
    return [
        Error(f"{name} must be a positive number, not {getattr(settings, name)!r}", id="assets.E001")
        for name in ASSET_LIMITS
        if not isinstance(getattr(settings, name), int | float) or getattr(settings, name) <= 0
    ]
