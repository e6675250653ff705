from rest_framework.routers import SimpleRouter

from workflow_templates.api import TemplateViewSet
from workflow_templates.pipeline_api import PipelineViewSet

router = SimpleRouter()
router.register("templates", TemplateViewSet, basename="template")
router.register("pipelines", PipelineViewSet, basename="pipeline")
urlpatterns = router.urls
