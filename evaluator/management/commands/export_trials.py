from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from evaluator.study_reports import study_trials
from studyapp.selectors.studies import StudyNotFound, study_get_by_code


class Command(BaseCommand):
    help = "Write the study's long trial table (humans and models, one row per answer) as CSV."

    def add_arguments(self, parser):
        parser.add_argument("study", help="The study's public code.")
        parser.add_argument("--out", type=Path, required=True)

    def handle(self, *args, study, out, **options):
        try:
            study = study_get_by_code(code=study)
        except StudyNotFound as exc:
            raise CommandError(str(exc)) from None
        frame = study_trials(study=study)
        out.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(out, index=False)
        self.stdout.write(f"Wrote {len(frame)} trials ({frame['subject'].nunique()} subjects) to {out}")
