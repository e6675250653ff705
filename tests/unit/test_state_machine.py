"""The one state machine: compare-and-set transitions, illegal ones refused."""

import pytest

from jobs import services
from jobs.models import Job, JobStatus
from tests.factories import JobFactory

pytestmark = pytest.mark.django_db


def test_transition_stamps_time_and_bumps_seq():
    job = JobFactory.create()
    assert services.job_transition(job, JobStatus.SUBMITTED)
    stored = Job.objects.get(pk=job.pk)
    assert stored.status == JobStatus.SUBMITTED and stored.submitted_at is not None and stored.seq == 1


def test_illegal_transition_is_refused():
    job = JobFactory.create(status=JobStatus.COMPLETED)
    with pytest.raises(services.IllegalTransition):
        services.job_transition(job, JobStatus.RUNNING)
    with pytest.raises(services.IllegalTransition):
        services.job_transition(JobFactory.create(), JobStatus.COMPLETED)


def test_compare_and_set_lets_only_one_writer_win():
    job = JobFactory.create()
    stale_copy = Job.objects.get(pk=job.pk)
    assert services.job_transition(job, JobStatus.CANCELLED)
    # A worker holding an old copy tries to submit the job that was cancelled meanwhile.
    assert not services.job_transition(stale_copy, JobStatus.SUBMITTED, expected=JobStatus.QUEUED)
    assert stale_copy.status == JobStatus.CANCELLED
    assert Job.objects.get(pk=job.pk).status == JobStatus.CANCELLED


def test_progress_is_never_written_to_a_finished_job():
    job = JobFactory.create(status=JobStatus.RUNNING)
    services.job_transition(job, JobStatus.FAILED)
    job.progress = 0.5
    assert not services.job_progress_save(job)
    assert Job.objects.get(pk=job.pk).progress == 0.0


def test_completed_job_reports_100_percent():
    job = JobFactory.create(status=JobStatus.RUNNING, progress=0.7)
    services.job_transition(job, JobStatus.COMPLETED)
    assert Job.objects.get(pk=job.pk).progress == 1.0
