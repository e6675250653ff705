from django.apps import AppConfig


class MetricsConfig(AppConfig):
    name = "metrics"
    verbose_name = "Prometheus metrics"

    def ready(self) -> None:
        from jobs import instruments
        from metrics import checks  # noqa: F401  (registers the system check)
        from metrics.recorder import PrometheusRecorder

        instruments.recorder_install(PrometheusRecorder())
