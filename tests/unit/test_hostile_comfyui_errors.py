"""What ComfyUI returns is untrusted (issue 11): hostile errors and answers of unforeseen shapes, sent
by a fake ComfyUI to the real tracker and sweeps in this process. Each ends the job clearly, keeps
what matters and stays small; nothing crash-loops."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs import sweeps
from jobs.models import FailureCategory, Job, JobStatus
from jobs.tracking import job_track
from tests.factories import JobFactory
from tests.hostile_comfyui import HostileComfyUI, history_entry, image_outputs

pytestmark = pytest.mark.django_db

FIVE_MB = 5 * 1024 * 1024


def failed_in_comfyui(hostile_comfyui: HostileComfyUI, error: dict, user=None) -> Job:
    hostile_comfyui.entry = history_entry(status="error", messages=[["execution_error", error]])
    job = JobFactory.create(user=user) if user is not None else JobFactory.create()
    job_track(str(job.id))
    job.refresh_from_db()
    return job


def test_five_megabyte_message_and_huge_traceback_keep_the_job_detail_small(hostile_comfyui, settings, api, user):
    traceback = [f'  File "/comfy/nodes.py", line {n}, in deep_{n}\n' for n in range(200_000)]  # ~9 MB
    traceback[0] = "Traceback (most recent call last):\n"
    traceback[-1] = "RuntimeError: the real cause\n"
    error = {
        "prompt_id": "x",
        "node_id": "7",
        "node_type": "KSampler",
        "exception_type": "RuntimeError",
        "exception_message": "boom " + "x" * FIVE_MB,
        "traceback": traceback,
        "executed": [],
    }
    job = failed_in_comfyui(hostile_comfyui, error, user=user)

    assert job.status == JobStatus.FAILED and job.failure_category == FailureCategory.NODE_ERROR
    assert job.error_message.startswith("KSampler #7: RuntimeError: boom xxx")
    assert len(job.error_message) <= settings.JOB_ERROR_MESSAGE_MAX_CHARS
    details = job.error_details
    assert details["node_id"] == "7" and details["node_type"] == "KSampler" and details["truncated"] is True
    assert details["traceback"][0] == traceback[0] and details["traceback"][-1] == traceback[-1]
    assert "lines of traceback left out" in "".join(details["traceback"])
    assert sum(map(len, details["traceback"])) <= settings.JOB_ERROR_TRACEBACK_MAX_CHARS + 100
    response = api.get(f"/api/jobs/{job.id}/")
    assert response.status_code == 200
    assert len(response.content) < 100_000, f"job detail is {len(response.content)} bytes"
    assert len(api.get(f"/api/jobs/{job.id}/attempts/").content) < 20_000
    assert len(api.get(f"/api/jobs/{job.id}/events/").content) < 20_000


def test_nul_bytes_in_an_execution_error_are_stored_cleaned(hostile_comfyui):
    error = {
        "node_id": "7\x00",
        "node_type": "Bad\x00Node",
        "exception_type": "ValueError",
        "exception_message": "broken \x00 value",
        "traceback": ["line\x00one\n"],
    }
    job = failed_in_comfyui(hostile_comfyui, error)

    assert job.status == JobStatus.FAILED and job.failure_category == FailureCategory.NODE_ERROR
    assert "\x00" not in job.error_message and "broken  value" in job.error_message
    assert "\x00" not in json.dumps(job.error_details)
    assert job.error_details["traceback"] == ["lineone\n"]


def test_huge_node_errors_body_with_nul_is_bounded_and_still_classified(hostile_comfyui, settings):
    node_errors = {
        str(n): {
            "errors": [
                {
                    "type": "value_not_in_list",
                    "message": "Value not in list",
                    "details": "sampler_name: 'euler\x00x' not in (list of length 40)" + " pad" * 200,
                    "extra_info": {"input_name": "sampler_name", "input_config": None, "received_value": "euler\x00x"},
                }
            ],
            "dependent_outputs": ["9"],
            "class_type": "KSampler",
        }
        for n in range(3000)
    }
    hostile_comfyui.rejection = {
        "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation"},
        "node_errors": node_errors,
    }
    job = JobFactory.create()
    job_track(str(job.id))
    job.refresh_from_db()

    assert job.status == JobStatus.FAILED
    assert job.failure_category == FailureCategory.VALIDATION, "a bad sampler is no missing model"
    stored = json.dumps(job.error_details)
    assert len(stored.encode()) <= settings.JOB_ERROR_DETAILS_MAX_BYTES + 1000
    assert "\x00" not in stored and "\x00" not in job.error_message
    assert job.error_details["truncated"] is True
    assert "sampler_name" in stored, "what went wrong is still in the details"
    assert len(job.error_message) <= settings.JOB_ERROR_MESSAGE_MAX_CHARS


def a_bug(*args: object, **kwargs: object) -> None:
    raise RuntimeError("a bug nobody foresaw")


def test_unexpected_error_in_the_tracker_fails_the_job_once_and_for_all(hostile_comfyui, caplog, monkeypatch):
    # The client reads any shape ComfyUI sends, so a bug of our own stands in for the unforeseen.
    monkeypatch.setattr("jobs.tracking.ending.history_outputs", a_bug)
    hostile_comfyui.entry = history_entry(image_outputs("9", ["fine.png"]))
    job = JobFactory.create()
    with caplog.at_level(logging.ERROR, logger="jobs.tracking"):
        job_track(str(job.id))  # does not raise: the worker goes on with its next job
    job.refresh_from_db()

    assert job.status == JobStatus.FAILED
    assert job.failure_category == FailureCategory.INTERNAL_ERROR
    assert "unexpected error" in job.error_message and job.error_details["exception_type"]
    assert any(r.exc_info for r in caplog.records), "the exception is logged with its traceback"
    assert not job.attempts.filter(outcome="").exists(), "no attempt is left open"
    # A second delivery, or a sweep, finds it final: nothing to take up again.
    job_track(str(job.id))
    assert sweeps.sweep_orphaned_jobs() == 0
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED


def test_sweep_ends_the_job_it_cannot_handle_and_goes_on_with_the_others(settings, caplog, monkeypatch):
    hostile = HostileComfyUI().start()
    healthy = HostileComfyUI().start()
    try:
        locate = sweeps.prompt_locate

        def locate_or_fail(client, prompt_id):  # a bug of ours that strikes on one backend only
            if client.base_url == hostile.url:
                a_bug()
            return locate(client, prompt_id)

        monkeypatch.setattr(sweeps, "prompt_locate", locate_or_fail)
        settings.COMFYUI_BACKENDS = {"default": healthy.url, "hostile": hostile.url}
        stale = timezone.now() - timedelta(hours=1)
        lost = JobFactory.create(backend="default", status=JobStatus.RUNNING, heartbeat_at=stale)
        broken = JobFactory.create(backend="hostile", status=JobStatus.RUNNING, heartbeat_at=stale)
        assert Job.objects.filter(status=JobStatus.RUNNING).first() == broken, "the broken job comes first"

        with caplog.at_level(logging.ERROR, logger="jobs.sweeps"):
            sweeps.sweep_orphaned_jobs()
        broken.refresh_from_db()
        lost.refresh_from_db()
        assert broken.status == JobStatus.FAILED and broken.failure_category == FailureCategory.INTERNAL_ERROR
        assert any(r.exc_info for r in caplog.records)
        # The other job was handled all the same: lost in ComfyUI, so back in the queue for attempt 2.
        assert lost.status == JobStatus.QUEUED and lost.attempt == 2
        assert sweeps.sweep_orphaned_jobs() == 0, "the next sweep does not meet the broken job again"
    finally:
        hostile.stop()
        healthy.stop()
