"""The shapes of GET /api/quotas/me/ and GET /api/quotas/ (read-only: limits are set in the admin)."""

from __future__ import annotations

from rest_framework import serializers

from quotas.overview import DEFAULT_SORT, SORT_KEYS

SORT_CHOICES = sorted([*SORT_KEYS, *(f"-{key}" for key in SORT_KEYS)])


class LimitsSerializer(serializers.Serializer):
    """null: unlimited."""

    max_running_jobs = serializers.IntegerField(allow_null=True)
    max_waiting_jobs = serializers.IntegerField(allow_null=True)
    gpu_seconds_per_day = serializers.IntegerField(allow_null=True)


class UsageSerializer(serializers.Serializer):
    running = serializers.IntegerField(help_text="jobs submitted to or running on a GPU")
    waiting = serializers.IntegerField(help_text="jobs queued or blocked")
    gpu_seconds_today = serializers.IntegerField(help_text="run time of jobs started since 00:00 UTC")
    gpu_seconds_week = serializers.IntegerField(
        help_text="run time of jobs started in the last 7 UTC days, today included"
    )


class UserUsageSerializer(serializers.Serializer):
    user_id = serializers.IntegerField()
    username = serializers.CharField()
    usage = UsageSerializer()
    limits = LimitsSerializer()
    own_limits = serializers.BooleanField(help_text="the user has limits of their own (else the defaults)")
    used_fractions = serializers.DictField(
        child=serializers.FloatField(), help_text="share of each set limit in use (1.0: at the limit)"
    )
    closeness = serializers.FloatField(allow_null=True, help_text="the largest of used_fractions")


class MyQuotaSerializer(UserUsageSerializer):
    over_limit = serializers.ChoiceField(
        choices=["reject", "wait"], help_text="what a submission over a limit gets: 429, or accepted to wait"
    )
    day_started_at = serializers.DateTimeField(help_text="the start of today's GPU-second budget (00:00 UTC)")
    may_start_now = serializers.BooleanField(help_text="under the running limit and the daily GPU budget")


class UsagePageSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    page = serializers.IntegerField()
    pages = serializers.IntegerField()
    results = UserUsageSerializer(many=True)


class UsageQuerySerializer(serializers.Serializer):
    ordering = serializers.ChoiceField(choices=SORT_CHOICES, default=DEFAULT_SORT, required=False)
    page = serializers.IntegerField(min_value=1, default=1, required=False)
    page_size = serializers.IntegerField(min_value=1, max_value=200, default=50, required=False)
