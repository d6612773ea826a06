# Item.source_sha256: the source file's digest, compared with the images a model was trained on.
# Not frozen (a backfill may fill it on open studies' items); the triggers are lifted around the
# table rebuild SQLite does for a new column (studyapp/frozen.py).

from django.db import migrations, models

from studyapp import frozen


class Migration(migrations.Migration):

    dependencies = [
        ('studyapp', '0005_frozen_triggers'),
    ]

    operations = [
        frozen.unfreeze(),
        migrations.AddField(
            model_name='item',
            name='source_sha256',
            field=models.CharField(blank=True, help_text="sha256 of the source file's bytes before re-encoding: compared with the images a model was trained on. Empty only for items imported before it was recorded.", max_length=64),
        ),
        frozen.freeze(),
    ]
