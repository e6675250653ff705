"""Configuration checks: a bad webhook setting stops the start with a clear message."""

from django.conf import settings
from django.core.checks import Error, register

# Each must be a positive number (anime_production/settings.py, "Webhooks").
WEBHOOK_LIMITS = (
    "WEBHOOK_MAX_PER_USER",
    "WEBHOOK_PROGRESS_SECONDS",
    "WEBHOOK_CONNECT_TIMEOUT",
    "WEBHOOK_READ_TIMEOUT",
    "WEBHOOK_RESPONSE_MAX_BYTES",
    "WEBHOOK_RETRY_BASE_SECONDS",
    "WEBHOOK_RETRY_MAX_DELAY_SECONDS",
    "WEBHOOK_RETRY_FOR_SECONDS",
    "WEBHOOK_SECRET_GRACE_SECONDS",
    "WEBHOOK_RETENTION_DAYS",
)


@register()
def webhook_settings_check(app_configs, **kwargs) -> list[Error]:
    errors = [
        Error(f"{name} must be a positive number, not {getattr(settings, name)!r}", id="webhooks.E001")
        for name in WEBHOOK_LIMITS
        if not isinstance(getattr(settings, name), int | float) or getattr(settings, name) <= 0
    ]
    if not str(settings.WEBHOOK_PUBLIC_URL).startswith(("http://", "https://")):
        errors.append(
            Error(
                f"WEBHOOK_PUBLIC_URL must be an http(s) URL, not {settings.WEBHOOK_PUBLIC_URL!r}",
                hint="the address receivers reach this server at, e.g. https://render.example.com",
                id="webhooks.E002",
            )
        )
    return errors
