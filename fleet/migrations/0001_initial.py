# The Backend model moved here from `monitoring` (no two apps may import each other, and `jobs`
# needs the drain flag). The table is adopted as it is, then renamed.
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [("monitoring", "0003_job_list_statistics")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Backend",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("name", models.CharField(max_length=64, unique=True)),
                        ("draining", models.BooleanField(default=False, help_text="finish what runs, take nothing new")),
                        ("draining_since", models.DateTimeField(blank=True, null=True)),
                    ],
                    options={"ordering": ["name"], "db_table": "monitoring_backend"},
                ),
            ],
            database_operations=[],
        ),
        migrations.AlterModelTable(name="backend", table=None),
    ]
