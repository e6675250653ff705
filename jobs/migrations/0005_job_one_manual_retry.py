"""A job has at most one manual retry. Jobs made by earlier duplicate retries keep their history but
lose the link (each gets a note on its timeline saying which job it retried)."""

from django.db import migrations, models
from django.db.models import Count
from django.utils import timezone


def unlink_duplicate_retries(apps, schema_editor):
    Job = apps.get_model("jobs", "Job")
    JobEvent = apps.get_model("jobs", "JobEvent")
    duplicated = (
        Job.objects.filter(retry_of__isnull=False)
        .values("retry_of")
        .annotate(count=Count("id"))
        .filter(count__gt=1)
        .values_list("retry_of", flat=True)
    )
    for original in list(duplicated):
        for job in Job.objects.filter(retry_of=original).order_by("created_at", "id")[1:]:
            seq = job.seq + 1
            Job.objects.filter(pk=job.pk).update(retry_of=None, seq=seq)
            JobEvent.objects.create(
                job=job,
                seq=seq,
                kind="note",
                at=timezone.now(),
                data={"message": f"a second manual retry of job {original}; unlinked, a job keeps one retry"},
            )


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0004_failure_category_internal_error"),
    ]

    operations = [
        migrations.RunPython(unlink_duplicate_retries, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="job",
            constraint=models.UniqueConstraint(fields=("retry_of",), name="job_one_manual_retry"),
        ),
    ]
