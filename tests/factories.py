import factory
from django.contrib.auth import get_user_model

from jobs.models import Job

SLEEP_WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
    "2": {"class_type": "TestSleep", "inputs": {"value": ["1", 0], "seconds": 0.5}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "test"}},
}


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"artist{n}")
    password = factory.django.Password("pw-for-tests")


class JobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Job

    user = factory.SubFactory(UserFactory)
    backend = "default"
    job_type = "image"
    priority = 5
    workflow = factory.LazyFunction(lambda: {k: dict(v) for k, v in SLEEP_WORKFLOW.items()})
