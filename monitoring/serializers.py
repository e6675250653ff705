"""The shapes of `/api/stats/` (monitoring.stats, monitoring.failure_stats), for its query and the schema."""

from __future__ import annotations

from rest_framework import serializers

from monitoring.stats import DEFAULT_WINDOW_DAYS, WINDOW_CHOICES


class StatsQuerySerializer(serializers.Serializer):
    days = serializers.ChoiceField(
        choices=WINDOW_CHOICES, required=False, default=DEFAULT_WINDOW_DAYS, help_text="the window, in whole days"
    )


class TallySerializer(serializers.Serializer):
    """Finished jobs of one group: counts, and percentiles of completed jobs' durations (seconds)."""

    count = serializers.IntegerField()
    completed = serializers.IntegerField()
    failed = serializers.IntegerField()
    cancelled = serializers.IntegerField()
    success_rate = serializers.FloatField(allow_null=True, help_text="completed / (completed + failed)")
    wait_p50 = serializers.FloatField(allow_null=True)
    wait_p95 = serializers.FloatField(allow_null=True)
    run_p50 = serializers.FloatField(allow_null=True)
    run_p95 = serializers.FloatField(allow_null=True)
    per_hour = serializers.FloatField()
    per_day = serializers.FloatField()


class JobTypeTallySerializer(TallySerializer):
    job_type = serializers.CharField()


class BackendTallySerializer(TallySerializer):
    backend = serializers.CharField()


class HourCountsSerializer(serializers.Serializer):
    hour = serializers.DateTimeField()
    count = serializers.IntegerField()
    completed = serializers.IntegerField()
    failed = serializers.IntegerField()
    cancelled = serializers.IntegerField()


class DayCountsSerializer(serializers.Serializer):
    day = serializers.DateField()
    count = serializers.IntegerField()
    completed = serializers.IntegerField()
    failed = serializers.IntegerField()
    cancelled = serializers.IntegerField()


class SlowNodeSerializer(serializers.Serializer):
    class_type = serializers.CharField()
    count = serializers.IntegerField()
    mean = serializers.FloatField(allow_null=True)
    p50 = serializers.FloatField(allow_null=True)
    p95 = serializers.FloatField(allow_null=True)
    max = serializers.FloatField()


class FailureCountSerializer(serializers.Serializer):
    category = serializers.CharField()
    # The field shadows Field.label (a field's own title) for mypy only: DRF collects declared fields apart.
    label = serializers.CharField()  # type: ignore[assignment]
    count = serializers.IntegerField()


class GenerationStatsSerializer(serializers.Serializer):
    window_days = serializers.IntegerField()
    since = serializers.DateTimeField()
    generated_at = serializers.DateTimeField()
    note = serializers.CharField()
    overall = TallySerializer()
    by_job_type = JobTypeTallySerializer(many=True)
    by_backend = BackendTallySerializer(many=True)
    throughput_hourly = HourCountsSerializer(many=True, help_text="the last 48 hours")
    throughput_daily = DayCountsSerializer(many=True)
    slowest_nodes = SlowNodeSerializer(many=True)
    failures_by_category = FailureCountSerializer(many=True, help_text="failed jobs per category, most first")
