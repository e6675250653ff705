"""/metrics: who may scrape it, and that what it says is what the database and the job code did."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from jobs import services
from jobs.models import FailureCategory, Job, JobStatus
from metrics.apps import multiproc_dir_prepare
from metrics.collector import DATABASE_COLLECTOR
from metrics.recorder import PROCESS_REGISTRY, PrometheusRecorder
from monitoring.models import BackendHealthSample
from monitoring.rollups import stats_rollup_refresh
from tests.factories import JobFactory

pytestmark = pytest.mark.django_db

TOKEN = "t0ken-for-the-metrics-tests-0123456789"
BEARER = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
BACKENDS = {"default": "http://127.0.0.1:8188"}  # the configured backends, whatever another test left


@pytest.fixture(autouse=True)
def _fresh_read() -> Iterator[None]:
    DATABASE_COLLECTOR.clear()  # each test sees its own database, not the previous test's cached read
    yield
    DATABASE_COLLECTOR.clear()


def scrape(client, **headers) -> Samples:
    with override_settings(METRICS_TOKEN=TOKEN, METRICS_ALLOWED_NETWORKS=[], COMFYUI_BACKENDS=BACKENDS):
        DATABASE_COLLECTOR.clear()
        response = client.get("/metrics", **(headers or BEARER))
    assert response.status_code == 200, response.content
    samples: Samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def process_value(name: str, **labels: str) -> float:
    return PROCESS_REGISTRY.get_sample_value(name, labels) or 0.0


# --- who may scrape ------------------------------------------------------------------------------


@override_settings(METRICS_TOKEN="", METRICS_ALLOWED_NETWORKS=[])
def test_not_configured_is_not_found(client):
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", **BEARER).status_code == 404


@override_settings(METRICS_TOKEN=TOKEN, METRICS_ALLOWED_NETWORKS=[])
def test_token_is_required(client, admin_client):
    anonymous = client.get("/metrics")
    assert anonymous.status_code == 401 and anonymous["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {TOKEN}").status_code == 401
    assert client.get(f"/metrics?token={TOKEN}").status_code == 401  # never in the URL: logs keep URLs
    assert admin_client.get("/metrics").status_code == 401  # a staff session is not a scraper
    response = client.get("/metrics", **BEARER)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    assert "# TYPE anime_queue_depth gauge" in response.content.decode()
    assert client.post("/metrics", **BEARER).status_code == 405


@override_settings(METRICS_TOKEN="", METRICS_ALLOWED_NETWORKS=["10.0.0.0/8", "192.168.1.7"])
def test_allowed_networks(client):
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="10.2.3.4").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.168.1.7").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.168.1.8").status_code == 403


@override_settings(METRICS_TOKEN=TOKEN, METRICS_ALLOWED_NETWORKS=["10.0.0.0/8"])
def test_network_and_token_both_required_when_both_set(client):
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1", **BEARER).status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="10.0.0.1").status_code == 401
    assert client.get("/metrics", REMOTE_ADDR="10.0.0.1", **BEARER).status_code == 200


def _metrics_check_ids() -> set[str]:
    return {message.id for message in run_checks() if message.id and message.id.startswith("metrics.")}


def test_system_check_rejects_bad_settings():
    with override_settings(METRICS_TOKEN="", METRICS_ALLOWED_NETWORKS=[]):
        assert _metrics_check_ids() == set()
    with override_settings(METRICS_TOKEN=TOKEN, METRICS_ALLOWED_NETWORKS=["10.0.0.0/8", "not-a-net"]):
        assert _metrics_check_ids() == {"metrics.E001"}
    with override_settings(METRICS_TOKEN="short", METRICS_ALLOWED_NETWORKS=[]):
        assert _metrics_check_ids() == {"metrics.E002"}
    with override_settings(METRICS_TOKEN="", METRICS_ALLOWED_NETWORKS=["0.0.0.0/0"], DEBUG=False):
        assert _metrics_check_ids() == {"metrics.W001"}


def test_a_process_counting_alone_is_reported(tmp_path):
    with override_settings(PROMETHEUS_MULTIPROC_DIR=str(tmp_path)):
        # This test process imported prometheus-client without the variable: its counters are its own.
        assert _metrics_check_ids() == {"metrics.E003"}


def test_the_multiprocess_dir_is_made_or_the_process_refuses_to_start(tmp_path):
    multiproc_dir_prepare(str(tmp_path / "a" / "b"))
    assert (tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(ImproperlyConfigured, match="PROMETHEUS_MULTIPROC_DIR"):
        multiproc_dir_prepare(str(tmp_path / "file" / "below"))


# --- what the database says ------------------------------------------------------------------------


def test_live_jobs_and_queues_match_the_database(client):
    old = timezone.now() - timedelta(minutes=10)
    JobFactory.create_batch(3, status=JobStatus.QUEUED, job_type="video")
    oldest = JobFactory.create(status=JobStatus.QUEUED, job_type="video")
    Job.objects.filter(pk=oldest.pk).update(created_at=old)
    JobFactory.create(status=JobStatus.RUNNING)
    JobFactory.create(status=JobStatus.BLOCKED)
    JobFactory.create(status=JobStatus.QUEUED, backend="default")  # bound to a backend, not yet submitted
    samples = scrape(client)
    # Waiting jobs are bound to no backend until one takes them (late routing): "unbound".
    assert value(samples, "anime_jobs", state="queued", backend="unbound", job_type="video") == 4
    assert value(samples, "anime_jobs", state="queued", backend="default", job_type="image") == 1
    assert value(samples, "anime_jobs", state="running", backend="default", job_type="image") == 1
    assert value(samples, "anime_jobs", state="blocked", backend="unbound", job_type="image") == 1
    assert value(samples, "anime_queue_depth", backend="unbound") == 4
    assert value(samples, "anime_queue_depth", backend="default") == 1
    assert 595 <= value(samples, "anime_queue_oldest_wait_seconds", backend="unbound") <= 700
    assert value(samples, "anime_queue_oldest_wait_seconds", backend="default") < 60


def test_finished_jobs_and_failures_match_the_database_across_a_rollup(client):
    JobFactory.create_batch(2, status=JobStatus.RUNNING)
    for job in Job.objects.all():
        services.job_transition(job, JobStatus.COMPLETED)
    stats_rollup_refresh()  # these two are now counted from the roll-ups...
    failing = JobFactory.create(status=JobStatus.RUNNING)
    services.job_fail(failing, FailureCategory.NODE_ERROR, "KSampler exploded")  # ...and this one since
    samples = scrape(client)
    assert value(samples, "anime_finished_jobs", state="completed", backend="default", job_type="image") == 2
    assert value(samples, "anime_finished_jobs", state="failed", backend="default", job_type="image") == 1
    assert value(samples, "anime_failed_jobs", backend="default", category="node_error") == 1
    stats_rollup_refresh()  # once rolled up, the failed one is counted once, not twice
    samples = scrape(client)
    assert value(samples, "anime_failed_jobs", backend="default", category="node_error") == 1
    assert value(samples, "anime_finished_jobs", state="completed", backend="default", job_type="image") == 2


def test_backend_health_and_vram_from_the_latest_probe(client):
    BackendHealthSample.objects.create(backend="default", reachable=False, error="refused")
    BackendHealthSample.objects.create(
        backend="default", reachable=True, queue_running=1, queue_pending=2, vram_total=24 * 2**30, vram_free=2**30
    )
    samples = scrape(client)
    assert value(samples, "anime_backend_up", backend="default") == 1
    assert value(samples, "anime_backend_vram_total_bytes", backend="default") == 24 * 2**30
    assert value(samples, "anime_backend_vram_free_bytes", backend="default") == 2**30
    assert value(samples, "anime_backend_comfyui_queue", backend="default") == 3
    assert value(samples, "anime_backend_draining", backend="default") == 0
    BackendHealthSample.objects.create(backend="default", reachable=False, error="refused")
    assert value(scrape(client), "anime_backend_up", backend="default") == 0


def test_labels_are_bounded_whatever_the_rows_hold(client):
    JobFactory.create(status=JobStatus.QUEUED, backend="", job_type="image")  # not routed yet
    JobFactory.create(status=JobStatus.QUEUED, backend="gpu-from-a-request", job_type="<script>")
    BackendHealthSample.objects.create(backend="gpu-from-a-request", reachable=True)
    samples = scrape(client)
    assert value(samples, "anime_queue_depth", backend="unbound") == 1
    assert value(samples, "anime_queue_depth", backend="other") == 1
    assert value(samples, "anime_jobs", state="queued", backend="other", job_type="other") == 1
    # The database's series (the process's counters keep what other tests recorded under their settings).
    backends = {dict(labels).get("backend") for name, labels in samples if not name.startswith("anime_job_")}
    assert backends <= {None, "default", "unbound", "other"}


def test_recorded_labels_are_bounded_whatever_the_job_holds():
    job = SimpleNamespace(
        backend="gpu-from-a-request",
        job_type="<script>",
        failure_category="made-up",
        attempt=1,
        created_at=timezone.now() - timedelta(seconds=5),
        not_before=None,
        submitted_at=timezone.now(),
        started_at=timezone.now() - timedelta(seconds=3),
        finished_at=timezone.now(),
    )
    labels = {"backend": "other", "job_type": "other"}
    before = process_value("anime_job_failures_total", **labels, category="other")
    waits = process_value("anime_job_queue_wait_seconds_count", **labels)
    recorder = PrometheusRecorder()
    recorder.job_transitioned(job, JobStatus.QUEUED, JobStatus.SUBMITTED)
    recorder.job_transitioned(job, JobStatus.RUNNING, JobStatus.FAILED)
    recorder.tracker_reconnected("anything")
    assert process_value("anime_job_failures_total", **labels, category="other") == before + 1
    assert process_value("anime_job_queue_wait_seconds_count", **labels) == waits + 1
    assert (
        process_value("anime_job_failures_total", backend="gpu-from-a-request", job_type="<script>", category="made-up")
        == 0
    )
    assert process_value("anime_tracker_reconnects_total", reason="anything") == 0


def test_database_is_read_in_constant_queries_and_cached(client):
    JobFactory.create_batch(2, status=JobStatus.QUEUED)
    stats_rollup_refresh()
    with override_settings(METRICS_TOKEN=TOKEN, METRICS_ALLOWED_NETWORKS=[]):
        with CaptureQueriesContext(connection) as few:
            assert client.get("/metrics", **BEARER).status_code == 200
        JobFactory.create_batch(30, status=JobStatus.QUEUED)
        JobFactory.create_batch(30, status=JobStatus.FAILED, failure_category="lost", finished_at=timezone.now())
        DATABASE_COLLECTOR.clear()
        with CaptureQueriesContext(connection) as many:
            assert client.get("/metrics", **BEARER).status_code == 200
        with CaptureQueriesContext(connection) as cached:
            assert client.get("/metrics", **BEARER).status_code == 200
    assert len(many.captured_queries) == len(few.captured_queries) <= 8
    assert len(cached.captured_queries) == 0


# --- what the job code counts ----------------------------------------------------------------------


def test_transitions_move_the_histograms_and_the_failure_counter(client):
    labels = {"backend": "default", "job_type": "image"}
    waits = process_value("anime_job_queue_wait_seconds_count", **labels)
    runs = process_value("anime_job_run_seconds_count", **labels, outcome="failed")
    failures = process_value("anime_job_failures_total", **labels, category="out_of_memory")
    job = JobFactory.create()
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(seconds=40))
    job.refresh_from_db()
    services.job_transition(job, JobStatus.SUBMITTED, backend="default")  # as a backend takes it (jobs.dispatch)
    services.job_transition(job, JobStatus.RUNNING, started_at=timezone.now() - timedelta(seconds=25))
    with override_settings(JOB_RETRY_LIMITS={}):
        services.job_fail(job, FailureCategory.OUT_OF_MEMORY, "CUDA out of memory")
    assert process_value("anime_job_queue_wait_seconds_count", **labels) == waits + 1
    assert process_value("anime_job_run_seconds_count", **labels, outcome="failed") == runs + 1
    assert process_value("anime_job_failures_total", **labels, category="out_of_memory") == failures + 1
    samples = scrape(client)  # one process, no multiprocess dir: the scrape shows this process's counters
    assert value(samples, "anime_job_failures_total", **labels, category="out_of_memory") == failures + 1


def test_queue_wait_is_observed_in_its_bucket():
    labels = {"backend": "default", "job_type": "upscale"}
    below = process_value("anime_job_queue_wait_seconds_bucket", **labels, le="30.0")
    above = process_value("anime_job_queue_wait_seconds_bucket", **labels, le="60.0")
    job = JobFactory.create(job_type="upscale")
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(seconds=45))
    job.refresh_from_db()
    services.job_transition(job, JobStatus.SUBMITTED, backend="default")
    assert process_value("anime_job_queue_wait_seconds_bucket", **labels, le="30.0") == below
    assert process_value("anime_job_queue_wait_seconds_bucket", **labels, le="60.0") == above + 1


def test_a_broken_recorder_never_breaks_a_transition(monkeypatch):
    from jobs import instruments

    class Broken:
        def job_transitioned(self, *args):
            raise RuntimeError("recorder down")

    monkeypatch.setattr(instruments, "_recorder", Broken())
    job = JobFactory.create()
    assert services.job_transition(job, JobStatus.CANCELLED)
    assert Job.objects.get(pk=job.pk).status == JobStatus.CANCELLED


def test_run_system_empties_the_last_runs_counters(tmp_path):
    from jobs.management.commands.run_system import metrics_dir_emptied

    directory = tmp_path / "metrics"
    assert metrics_dir_emptied(directory) == directory and directory.is_dir()
    (directory / "counter_123.db").write_bytes(b"old run")
    (directory / "histogram_124.db").write_bytes(b"old run")
    (directory / "README").write_text("not ours")
    metrics_dir_emptied(directory)
    assert sorted(path.name for path in directory.iterdir()) == ["README"]
