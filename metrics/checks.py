"""Start-up checks of the metrics settings: a bad network or a guessable token fails loudly, not at the first scrape."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

from metrics.access import allowed_networks

TOKEN_MIN_CHARS = 24


@register()
def metrics_settings_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    token: str = settings.METRICS_TOKEN
    try:
        networks = allowed_networks(settings.METRICS_ALLOWED_NETWORKS)
    except ValueError as exc:
        messages.append(Error(f"METRICS_ALLOWED_NETWORKS: {exc}", id="metrics.E001"))
        networks = []
    if token and len(token) < TOKEN_MIN_CHARS:
        messages.append(
            Error(
                f"METRICS_TOKEN is {len(token)} characters long; use at least {TOKEN_MIN_CHARS} random ones",
                hint='python -c "import secrets; print(secrets.token_urlsafe(32))"',
                id="metrics.E002",
            )
        )
    if not token and not settings.DEBUG and any(network.prefixlen == 0 for network in networks):
        messages.append(
            Warning(
                "METRICS_ALLOWED_NETWORKS admits every address and METRICS_TOKEN is not set: /metrics is open to all",
                id="metrics.W001",
            )
        )
    directory: str = settings.PROMETHEUS_MULTIPROC_DIR
    if directory and not _multiprocess_mode():
        messages.append(
            Error(
                "prometheus-client was imported before the metrics app set PROMETHEUS_MULTIPROC_DIR: "
                "this process counts for itself only, and no scrape sees its counters",
                hint="set PROMETHEUS_MULTIPROC_DIR in the environment before the process starts",
                id="metrics.E003",
            )
        )
    return messages


def _multiprocess_mode() -> bool:
    from prometheus_client import values

    return values.ValueClass is not values.MutexValue
