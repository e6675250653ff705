# The file store stayed down while a finished job's outputs were stored (jobs.tracking.ending).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('jobs', '0009_job_late_routing'),
    ]

    operations = [
        migrations.AlterField(
            model_name='job',
            name='failure_category',
            field=models.CharField(blank=True, choices=[('validation', 'Validation'), ('missing_model', 'Missing model'), ('missing_node', 'Missing node'), ('out_of_memory', 'Out of memory'), ('node_error', 'Node error'), ('interrupted', 'Interrupted'), ('comfyui_unreachable', 'ComfyUI unreachable'), ('lost', 'Lost'), ('stuck', 'Stuck'), ('timed_out', 'Timed out'), ('worker_lost', 'Worker lost'), ('output_missing', 'Output missing'), ('storage_unavailable', 'Storage unavailable'), ('internal_error', 'Internal error'), ('dependency_failed', 'Dependency failed')], db_index=True, max_length=32),
        ),
        migrations.AlterField(
            model_name='jobattempt',
            name='failure_category',
            field=models.CharField(blank=True, choices=[('validation', 'Validation'), ('missing_model', 'Missing model'), ('missing_node', 'Missing node'), ('out_of_memory', 'Out of memory'), ('node_error', 'Node error'), ('interrupted', 'Interrupted'), ('comfyui_unreachable', 'ComfyUI unreachable'), ('lost', 'Lost'), ('stuck', 'Stuck'), ('timed_out', 'Timed out'), ('worker_lost', 'Worker lost'), ('output_missing', 'Output missing'), ('storage_unavailable', 'Storage unavailable'), ('internal_error', 'Internal error'), ('dependency_failed', 'Dependency failed')], max_length=32),
        ),
    ]
