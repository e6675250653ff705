import uuid
from typing import Any

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from access.keys import api_key_create
from jobs.models import Job, JobStatus

SLEEP_WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
    "2": {"class_type": "TestSleep", "inputs": {"value": ["1", 0], "seconds": 0.5}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "test"}},
}


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"artist{n}")
    password = factory.django.Password("pw-for-tests")


WAITING = (JobStatus.QUEUED, JobStatus.BLOCKED)


class JobFactory(factory.django.DjangoModelFactory[Job]):
    class Meta:
        model = Job

    user = factory.SubFactory(UserFactory)
    status = JobStatus.QUEUED
    # A waiting job is bound to no backend (jobs.dispatch binds it when a backend takes it).
    backend = factory.LazyAttribute(
        lambda job: "" if job.status in (JobStatus.QUEUED, JobStatus.BLOCKED) else "default"
    )
    job_type = "image"
    priority = 5
    workflow = factory.LazyFunction(lambda: {k: dict(v) for k, v in SLEEP_WORKFLOW.items()})


def api_key_for(user: User) -> str:
    """A new API key of the user's (keys are stored hashed: the whole key exists only here)."""
    return api_key_create(user=user, name=f"tests-{uuid.uuid4().hex[:12]}").key


def keyed_client(user: Any) -> APIClient:
    """A REST client that carries the user's API key, as scripts and ComfyUI's clients do."""
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=api_key_for(user))
    return client
