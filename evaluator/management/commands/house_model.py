from django.core.management.base import BaseCommand, CommandError

from evaluator.errors import ScoringSetupError
from evaluator.house import house_checkpoint, house_exclusions


class Command(BaseCommand):
    help = (
        "Build (or find in the cache) the house model that leaves out the test items and shot examples of every "
        "study in the database and every image of the demo studies; prints its checkpoint path. Training takes "
        "9-30 min on a CPU; `manage.py score_study STUDY` without --checkpoint then scores with it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")

    def handle(self, *args, progress, **options):
        self.stderr.write(f"leaving out {len(house_exclusions())} images (the studies' test items and shots, and "
                          "the demo studies' images)")
        try:
            path = house_checkpoint(train=True, progress=progress)
        except (ScoringSetupError, OSError, ValueError, RuntimeError) as exc:
            raise CommandError(f"the house model could not be built: {exc}") from None
        self.stdout.write(str(path))
