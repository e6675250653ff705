from rest_framework.routers import DefaultRouter

from jobs.api import JobViewSet
from jobs.group_api import JobGroupViewSet
from jobs.pipeline_api import PipelineViewSet

router = DefaultRouter()
router.register("jobs", JobViewSet, basename="job")
router.register("groups", JobGroupViewSet, basename="job-group")
router.register("pipelines", PipelineViewSet, basename="pipeline")

urlpatterns = router.urls
