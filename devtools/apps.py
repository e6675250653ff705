from django.apps import AppConfig


class DevtoolsConfig(AppConfig):
    """Only for the management commands of the development tools (no models)."""

    name = "devtools"
