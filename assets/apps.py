from django.apps import AppConfig


class AssetsConfig(AppConfig):
    name = "assets"
    verbose_name = "Input assets"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from assets import checks  # noqa: F401  (registers the configuration checks)
