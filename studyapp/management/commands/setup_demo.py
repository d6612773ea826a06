from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from studyapp.services.datasets import DatasetImportError
from studyapp.services.demo import demo_data_root, demo_setup


class Command(BaseCommand):
    help = "Import the demo data and create the demo studies (idempotent). Prints each study's code, Pets first."

    def add_arguments(self, parser):
        parser.add_argument("--data", type=Path, help="Folder with oxford_pets/ and eurosat/ (default: $DEMO_DATA, "
                                                       "../shared/data, else the official downloads).")

    def handle(self, *args, data, **options):
        try:
            studies = demo_setup(data_root=demo_data_root(explicit=data))
        except DatasetImportError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(str(studies.pets.code))
        self.stdout.write(str(studies.eurosat.code))
