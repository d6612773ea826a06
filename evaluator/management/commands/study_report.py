from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from evaluator.report import RESAMPLE_UNITS, ReportExportError, ReportInputError, ReportOptions
from evaluator.study_reports import study_report_write
from studyapp.selectors.studies import StudyNotFound, study_get_by_code


class Command(BaseCommand):
    help = "Export the study's trials and write its report (table2.csv, consistency.csv, report.html, figures)."

    def add_arguments(self, parser):
        parser.add_argument("study", help="The study's public code.")
        parser.add_argument("--out", type=Path, required=True)
        parser.add_argument("--average", choices=["macro", "micro"], default="macro")
        parser.add_argument("--include-simulated", action="store_true")
        parser.add_argument("--include-attention-failed", action="store_true")
        parser.add_argument("--bootstrap", type=int, default=1000)
        parser.add_argument("--resample", choices=RESAMPLE_UNITS, default=ReportOptions.resample,
                            help="two-way (default): humans resample participants and items, models items.")
        parser.add_argument("--no-static", action="store_true", help="Skip the PNG/PDF export of the figures.")

    def handle(self, *args, study, out, **o):
        try:
            study = study_get_by_code(code=study)
        except StudyNotFound as exc:
            raise CommandError(str(exc)) from None
        options = ReportOptions(
            average=o["average"], include_simulated=o["include_simulated"],
            include_attention_failed=o["include_attention_failed"], bootstrap=o["bootstrap"],
            resample=o["resample"], static=not o["no_static"],
        )
        try:
            result = study_report_write(study=study, out_dir=out, options=options)
        except (ReportInputError, ReportExportError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Wrote {len(result.files)} files to {out}")
        self.stdout.write(result.tables["table2"].to_string(index=False))
