from rest_framework.routers import DefaultRouter

from jobs.api import JobViewSet
from jobs.group_api import JobGroupViewSet

router = DefaultRouter()
router.register("jobs", JobViewSet, basename="job")
router.register("groups", JobGroupViewSet, basename="job-group")

urlpatterns = router.urls
