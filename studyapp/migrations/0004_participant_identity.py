"""Participant identity (issue 14): consent enrolments, resume codes, look-alike hashes, two study settings.

Existing rows: studies keep the rules they opened with (no id required, no repeats across parts);
participants enrolled before get no resume code ("" = none: they were never shown one, so none is accepted).

On SQLite, adding a NOT NULL column rebuilds the table, which drops any trigger on it: this migration must
run before a migration that creates triggers on studyapp_study or studyapp_participant.
"""

from django.db import migrations, models

import studyapp.models


class Migration(migrations.Migration):

    dependencies = [
        ("studyapp", "0003_ratelimit_cache_table"),
    ]

    operations = [
        migrations.AddField(
            model_name="participant",
            name="client_hash",
            field=models.CharField(blank=True, editable=False, max_length=64),
        ),
        migrations.AddField(
            model_name="participant",
            name="enrolment",
            field=models.UUIDField(blank=True, editable=False, null=True, unique=True),
        ),
        migrations.AddField(
            model_name="participant",
            name="resume_code",
            field=models.CharField(default="", editable=False, max_length=16),
        ),
        migrations.AlterField(
            model_name="participant",
            name="resume_code",
            field=models.CharField(default=studyapp.models._new_resume_code, editable=False, max_length=16),
        ),
        migrations.AddField(
            model_name="study",
            name="participant_id_required",
            field=models.BooleanField(default=False),
        ),
        migrations.AlterField(
            model_name="study",
            name="participant_id_required",
            field=models.BooleanField(
                default=None,
                help_text="A PROLIFIC_PID or pid in the join link; one participant per id. Default: on when a "
                          "completion URL is set.",
                verbose_name="participants must arrive with an id",
            ),
        ),
        migrations.AddField(
            model_name="study",
            name="repeat_items_across_parts",
            field=models.BooleanField(
                default=False,
                help_text="Within subjects: off, a person never sees a test image in two parts (no familiarity "
                          "carried between parts); on, allocation ignores earlier parts, so within-person gains can "
                          "be measured.",
                verbose_name="the same image may appear again in a later part",
            ),
        ),
        migrations.AddIndex(
            model_name="participant",
            index=models.Index(fields=["study", "client_hash", "created_at"], name="participant_lookalike"),
        ),
    ]
