from django.apps import AppConfig


class ComfyApiConfig(AppConfig):
    name = "comfy_api"
    verbose_name = "ComfyUI front door"
    default_auto_field = "django.db.models.BigAutoField"
