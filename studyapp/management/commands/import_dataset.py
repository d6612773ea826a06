from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from studyapp.models import Dataset
from studyapp.services.datasets import TEST_FRACTION, DatasetImportError, dataset_import


class Command(BaseCommand):
    help = "Import a labelled image set (all or nothing unless --skip-bad)."

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path, help="Folder, CSV file, or Oxford-IIIT Pet root folder.")
        parser.add_argument("--format", required=True, choices=[f.value for f in Dataset.Format])
        parser.add_argument("--name", required=True)
        parser.add_argument("--skip-bad", action="store_true", help="Import what is valid and list what was skipped.")
        parser.add_argument("--classes", type=Path, help="Class order and prompt names: `name[,prompt name]` per line.")
        parser.add_argument("--images-root", type=Path, help="CSV only: folder the filenames are relative to.")
        parser.add_argument("--test-fraction", type=float, default=TEST_FRACTION,
                            help="Unsplit sources: share of each class held out as test (default %(default)s).")

    def handle(self, *args, path, format, name, skip_bad, classes, images_root, test_fraction, **options):
        try:
            report = dataset_import(
                name=name, path=path, fmt=format, skip_bad=skip_bad, classes_file=classes,
                images_root=images_root, test_fraction=test_fraction,
            )
        except DatasetImportError as exc:
            raise CommandError(str(exc)) from None
        dataset = report.dataset
        self.stdout.write(
            f"Imported {report.imported} images in {dataset.classes.count()} classes as {dataset.name!r} ({dataset.code})."
        )
        for note in report.notes:
            self.stdout.write(f"Note: {note}")
        if report.skipped:
            self.stdout.write(f"Skipped {len(report.skipped)}:")
            for line in report.skipped:
                self.stdout.write(f"  - {line}")
