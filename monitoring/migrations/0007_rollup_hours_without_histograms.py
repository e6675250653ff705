"""Hour roll-ups lose what nothing reads: node timings per hour, and the hour rows' histograms.

The statistics read histograms from day rows only (monitoring.stats); the refresh no longer writes
the others (monitoring.rollups). Clearing the ones already stored shrinks the roll-up table (97 MB for
61,000 rows at 300,000 jobs), whose rows are five in six hour rows, once PostgreSQL reuses the space.
"""

from django.apps.registry import Apps
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor


def hour_histograms_clear(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    apps.get_model("monitoring", "NodeRollup").objects.filter(period="hour").delete()
    apps.get_model("monitoring", "JobRollup").objects.filter(period="hour").update(wait_hist=[], run_hist=[])


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0006_pipeline_proxy")]

    # Nothing to put back: the next refresh of an older release would write them again.
    operations = [migrations.RunPython(hour_histograms_clear, migrations.RunPython.noop)]
