from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0003_job_list_statistics"), ("fleet", "0001_initial")]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[migrations.DeleteModel(name="Backend")], database_operations=[]),
    ]
