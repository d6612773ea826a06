from django.core.management.base import BaseCommand, CommandError

from studyapp.selectors.studies import StudyNotFound, study_get_by_code
from studyapp.simulation import simulation_run


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise CommandError(f"expected comma-separated numbers, got {text!r}") from None


class Command(BaseCommand):
    help = (
        "Run simulated participants through the real join → consent → trials → completion flow "
        "(in process, or against --base-url). They are marked simulated and excluded from reports by default."
    )

    def add_arguments(self, parser):
        parser.add_argument("study", help="The study's public code.")
        parser.add_argument("--n", type=int, required=True, help="Number of participants.")
        parser.add_argument("--accuracy", default="0.75", help="One value, or one per condition in shot order.")
        parser.add_argument("--idk-rate", default="0.05", help="One value, or one per condition in shot order.")
        parser.add_argument("--base-url", help="A running server, e.g. http://127.0.0.1:8000 (default: in process).")
        parser.add_argument("--concurrency", type=int, default=1, help="Participants running at the same time.")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--if-needed", action="store_true",
                            help="Do nothing if the study already has simulated participants (re-runnable demos).")

    def handle(self, *args, study, n, accuracy, idk_rate, base_url, concurrency, seed, if_needed, **options):
        if n < 1 or concurrency < 1:
            raise CommandError("--n and --concurrency must be at least 1")
        try:
            study_obj = study_get_by_code(code=study)
        except StudyNotFound as exc:
            raise CommandError(str(exc)) from None
        if if_needed and study_obj.participants.filter(simulated=True).exists():
            self.stdout.write(f"{study_obj.title}: already has simulated participants; nothing to do.")
            return
        try:
            result = simulation_run(
                study=study_obj, n=n, accuracy=_floats(accuracy), idk_rate=_floats(idk_rate),
                concurrency=concurrency, seed=seed, base_url=base_url,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(result.summary())
        if result.errors:
            raise CommandError(f"{len(result.errors)} simulated participant(s) failed")
