"""Configuration checks: a bad setting stops the start with a clear message."""

from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, register


@register()
def comfyui_backends_check(app_configs, **kwargs) -> list[Error]:
    errors = []
    for name, url in settings.COMFYUI_BACKENDS.items():
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            errors.append(
                Error(
                    f"ComfyUI backend {name!r} has an invalid URL {url!r}", hint="Use http://host:port", id="jobs.E001"
                )
            )
        if not name.replace("-", "").replace("_", "").isalnum():
            errors.append(Error(f"backend name {name!r} must be letters, digits, - or _", id="jobs.E002"))
    if settings.COMFYUI_DEFAULT_BACKEND not in settings.COMFYUI_BACKENDS:
        errors.append(
            Error(
                f"COMFYUI_DEFAULT_BACKEND {settings.COMFYUI_DEFAULT_BACKEND!r} is not a configured backend",
                id="jobs.E003",
            )
        )
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 3600)
    if not isinstance(visibility, int | float) or visibility <= settings.JOB_MAX_SECONDS:
        errors.append(
            Error(
                "the broker's visibility_timeout must exceed JOB_MAX_SECONDS, or long jobs are delivered twice",
                id="jobs.E004",
            )
        )
    return errors


# What is kept of ComfyUI's answers (anime_production/settings.py): each must let something through.
UNTRUSTED_LIMITS = (
    "JOB_OUTPUT_MAX_BYTES",
    "JOB_MAX_OUTPUTS",
    "JOB_ERROR_MESSAGE_MAX_CHARS",
    "JOB_ERROR_TRACEBACK_MAX_CHARS",
    "JOB_ERROR_DETAILS_MAX_BYTES",
    "JOB_THUMBNAIL_SIZE",
    "JOB_THUMBNAIL_MAX_PIXELS",
    "JOB_THUMBNAIL_MAX_BYTES",
)


@register()
def untrusted_limits_check(app_configs, **kwargs) -> list[Error]:
    return [
        Error(f"{name} must be a positive number, not {getattr(settings, name)!r}", id="jobs.E005")
        for name in UNTRUSTED_LIMITS
        if not isinstance(getattr(settings, name), int) or getattr(settings, name) < 1
    ]


@register()
def job_labels_check(app_configs, **kwargs) -> list[Error]:
    if isinstance(settings.JOB_MAX_TAGS, int) and settings.JOB_MAX_TAGS >= 0:
        return []
    return [Error(f"JOB_MAX_TAGS must be a whole number, 0 or more, not {settings.JOB_MAX_TAGS!r}", id="jobs.E006")]


@register()
def thumbnail_size_check(app_configs, **kwargs) -> list[Error]:
    size = settings.JOB_THUMBNAIL_SIZE
    if isinstance(size, int) and 16 <= size <= 1024:
        return []
    return [Error(f"JOB_THUMBNAIL_SIZE must be 16 to 1024 pixels, not {size!r}", id="jobs.E007")]


@register()
def routing_check(app_configs, **kwargs) -> list[Error]:
    errors = [
        Error(f"COMFYUI_BACKEND_LABELS names {name!r}, which is not a configured backend", id="jobs.E008")
        for name in settings.COMFYUI_BACKEND_LABELS
        if name not in settings.COMFYUI_BACKENDS
    ]
    if settings.FAIR_SHARE_BY not in ("user", "project"):
        errors.append(
            Error(f"FAIR_SHARE_BY must be 'user' or 'project', not {settings.FAIR_SHARE_BY!r}", id="jobs.E009")
        )
    return errors
