"""Configuration checks: a bad access setting stops the start with a clear message."""

from django.conf import settings
from django.core.checks import Error, Warning, register

# A ticket is fetched and used at once; past a few minutes it is a key in a URL by another name.
WS_TICKET_MAX_SECONDS = 300


@register()
def ws_ticket_seconds_check(app_configs, **kwargs) -> list[Error]:
    seconds = settings.WS_TICKET_SECONDS
    if not isinstance(seconds, int) or not 1 <= seconds <= WS_TICKET_MAX_SECONDS:
        return [
            Error(
                f"WS_TICKET_SECONDS must be 1 to {WS_TICKET_MAX_SECONDS} seconds, not {seconds!r}",
                hint="a websocket ticket is fetched just before the connection it opens; 30 is plenty",
                id="access.E001",
            )
        ]
    return []


@register()
def ws_token_in_url_check(app_configs, **kwargs) -> list[Warning]:
    if settings.WS_ALLOW_TOKEN_IN_URL:
        return [
            Warning(
                "WS_ALLOW_TOKEN_IN_URL is on: websockets take API keys in their URLs (?token=)",
                hint="URLs end up in proxies' logs and browser histories; clients can use "
                "POST /api/ws-tickets/ (?ticket=) or the X-API-Key header instead",
                id="access.W001",
            )
        ]
    return []


# docker/env.example's placeholder, and the key settings.py uses only when DEBUG is on: both public.
PUBLIC_SECRET_KEYS = ("change-me-to-a-long-random-string", "dev-only-insecure-key-change-me")


@register()
def secret_key_placeholder_check(app_configs, **kwargs) -> list[Error]:
    """An env file copied without editing its SECRET_KEY would sign every session and CSRF token with
    a key anyone can read in the repository; migrate (the Docker start) stops on it."""
    if not settings.DEBUG and (
        settings.SECRET_KEY in PUBLIC_SECRET_KEYS or settings.SECRET_KEY.startswith("change-me")
    ):
        return [
            Error(
                "SECRET_KEY is a placeholder from the repository, so anyone can forge sessions",
                hint='set a long random one: python3 -c "import secrets; print(secrets.token_urlsafe(50))"',
                id="access.E002",
            )
        ]
    return []
