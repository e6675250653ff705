import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "anime_production.settings")

app = Celery("anime_production")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
