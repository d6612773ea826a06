from django.db import migrations, models


class Migration(migrations.Migration):
    """After 0004 copied the old method into the new fields (a separate migration, so PostgreSQL commits that
    data before the tables are altered again)."""

    dependencies = [
        ('evaluator', '0004_fewshot_subjects_prompts_training'),
    ]

    operations = [
        migrations.RemoveField(
            model_name='modelrun',
            name='fewshot_method',
        ),
        migrations.AddConstraint(
            model_name='modelprediction',
            constraint=models.UniqueConstraint(fields=('run', 'condition', 'item', 'method'), name='prediction_unique'),
        ),
    ]
