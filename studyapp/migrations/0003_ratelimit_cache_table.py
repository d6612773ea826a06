# `manage.py migrate` alone must leave a working site: the join rate limit keeps its counters in a
# database cache table (CACHES["ratelimit"] in config/settings.py), so create it here rather than
# leaving it to a separate `createcachetable` that a deployment following Django's usual steps skips.

from django.core.management import call_command
from django.db import migrations


def create_cache_tables(apps, schema_editor):
    # Creates the table of every DatabaseCache in settings.CACHES; one that exists is left alone.
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):

    dependencies = [
        ('studyapp', '0002_participant_phases_entered'),
    ]

    operations = [
        migrations.RunPython(create_cache_tables, migrations.RunPython.noop, elidable=False),
    ]
