from django.apps import AppConfig


class WorkflowTemplatesConfig(AppConfig):
    name = "workflow_templates"
    verbose_name = "Workflow templates"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from workflow_templates import checks  # noqa: F401  (registers the configuration checks)
