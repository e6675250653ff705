from rest_framework.routers import SimpleRouter

from workflow_templates.api import TemplateViewSet

router = SimpleRouter()
router.register("templates", TemplateViewSet, basename="template")
urlpatterns = router.urls
