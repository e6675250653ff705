import os

from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiproc_dir_prepare(directory: str) -> None:
    """Make the directory where this process keeps its counters, or refuse to start: prometheus-client
    would otherwise fail on its first counter with a bare FileNotFoundError."""
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise ImproperlyConfigured(f"{MULTIPROC_ENV}={directory} cannot be made: {exc}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ImproperlyConfigured(f"{MULTIPROC_ENV}={directory} is not writable by this process")


class MetricsConfig(AppConfig):
    name = "metrics"
    verbose_name = "Prometheus metrics"

    def ready(self) -> None:
        # prometheus-client picks its mode from the environment when it is first imported (just
        # below): a directory that only the settings know (a container's own, under
        # METRICS_MULTIPROC_ROOT) is handed to it first, and to the processes this one starts.
        directory: str = settings.PROMETHEUS_MULTIPROC_DIR
        if directory:
            multiproc_dir_prepare(directory)
            os.environ[MULTIPROC_ENV] = directory
        elif MULTIPROC_ENV in os.environ:
            # Set but empty (an env file's `PROMETHEUS_MULTIPROC_DIR=`): prometheus-client would take
            # the mere name for multiprocess mode and write its files into the working directory.
            del os.environ[MULTIPROC_ENV]

        from jobs import instruments
        from metrics import checks  # noqa: F401  (registers the system checks)
        from metrics.recorder import PrometheusRecorder

        instruments.recorder_install(PrometheusRecorder())
