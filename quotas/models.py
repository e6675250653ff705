"""A user's own limits, over the defaults from settings (quotas.limits says how they combine)."""

from django.conf import settings
from django.db import models

# Who may see every user's usage (the admin page and GET /api/quotas/); editing a UserQuota row is the
# model's own change permission.
VIEW_USAGE = "quotas.view_usage"


class UserQuota(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="quota")
    unlimited = models.BooleanField(default=False, help_text="no limit at all, whatever the defaults say")
    max_running_jobs = models.PositiveIntegerField(
        null=True, blank=True, help_text="jobs on a GPU at once; blank: the default (QUOTA_MAX_RUNNING_JOBS)"
    )
    max_waiting_jobs = models.PositiveIntegerField(
        null=True, blank=True, help_text="jobs queued or blocked at once; blank: the default (QUOTA_MAX_WAITING_JOBS)"
    )
    gpu_seconds_per_day = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="run time of jobs started since 00:00 UTC; blank: the default (QUOTA_GPU_SECONDS_PER_DAY)",
    )
    note = models.CharField(max_length=200, blank=True, help_text="why this user has their own limits")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "user quota"
        permissions = [("view_usage", "Can view every user's usage and limits")]

    def __str__(self) -> str:
        return f"quota of {self.user}"
