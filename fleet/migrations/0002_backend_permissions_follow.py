# Permissions granted on the Backend model while it lived in `monitoring` (drain, view) stay granted:
# its content type moves with it instead of a new one being made.
from typing import Any

from django.db import migrations


def move_content_type(apps: Any, schema_editor: Any) -> None:
    content_types = apps.get_model("contenttypes", "ContentType")
    if content_types.objects.filter(app_label="fleet", model="backend").exists():
        return
    content_types.objects.filter(app_label="monitoring", model="backend").update(app_label="fleet")


def move_back(apps: Any, schema_editor: Any) -> None:
    content_types = apps.get_model("contenttypes", "ContentType")
    content_types.objects.filter(app_label="fleet", model="backend").update(app_label="monitoring")


class Migration(migrations.Migration):
    dependencies = [("fleet", "0001_initial"), ("contenttypes", "0002_remove_content_type_name")]

    operations = [migrations.RunPython(move_content_type, move_back)]
