"""The admin dashboard's pages, under /admin/dashboard/ (staff only, through the admin's login)."""

from django.contrib import admin
from django.urls import path

from monitoring import views

urlpatterns = [
    path("", admin.site.admin_view(views.dashboard_index_view), name="dashboard-index"),
    path("statistics/", admin.site.admin_view(views.statistics_view), name="dashboard-statistics"),
    path("failures/", admin.site.admin_view(views.failures_view), name="dashboard-failures"),
    path("live-queue/", admin.site.admin_view(views.live_queue_view), name="dashboard-live-queue"),
    path("backends/", admin.site.admin_view(views.backends_view), name="dashboard-backends"),
    path("backends/<str:name>/drain/", admin.site.admin_view(views.backend_drain_view), name="dashboard-backend-drain"),
]
