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


class UserDayUsage(models.Model):
    """GPU-seconds of one user's jobs that started on one UTC day, kept once the day is over and its
    jobs have ended (quotas.rollups): the 7-day figures read these instead of a week of jobs."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    gpu_seconds = models.PositiveBigIntegerField(default=0)
    jobs = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["day", "user"], name="userdayusage_one_per_day")]

    def __str__(self) -> str:
        return f"{self.user_id} on {self.day}: {self.gpu_seconds} GPU-seconds"


class UsageDayRolledUp(models.Model):
    """A UTC day whose UserDayUsage rows are all written (a day with no usage has none)."""

    day = models.DateField(unique=True)
    rolled_up_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.day} rolled up"
