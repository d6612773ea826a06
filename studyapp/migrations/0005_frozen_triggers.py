# An open or closed study is frozen by the database itself: see studyapp/frozen.py.

from django.db import migrations

from studyapp import frozen


class Migration(migrations.Migration):

    dependencies = [
        ('studyapp', '0004_participant_identity'),
    ]

    operations = [
        frozen.freeze(),
    ]
