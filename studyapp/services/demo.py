"""The demo: real Pets and EuroSAT images, two studies with three conditions each.

The shared partial copy of Oxford-IIIT Pet has official test images for only 3 breeds, so the
demo holds out a few images of every breed as its test items ("demo split") and two more per breed as
the shots. Which images those are is decided in clipmodel.demo_split (framework-free), so the house
model leaves every image of both demo datasets out of its training, with or without a database.
"""

import csv
import logging
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from clipmodel.demo_split import eurosat_demo_split, pets_demo_split, read_rows
from studyapp.models import Dataset, Study
from studyapp.services.datasets import DatasetImportError, dataset_fill_source_hashes, dataset_import, pets_download
from studyapp.services.studies import study_create, study_open

logger = logging.getLogger(__name__)

EUROSAT_URL = "https://zenodo.org/records/7711810/files/EuroSAT_RGB.zip"
PETS_DATASET = "Oxford-IIIT Pet (demo split)"
EUROSAT_DATASET = "EuroSAT RGB (demo subset)"

PETS_INSTRUCTIONS = (
    "You will see photos of cats and dogs. Pick the breed of each animal from the 37 choices. "
    "If you do not know, choose \"I don't know\" — a guess is not better than an honest \"I don't know\". "
    "In later phases you will see one or two example photos of every breed; open the examples whenever you like."
)
EUROSAT_INSTRUCTIONS = (
    "You will see small satellite images of land in Europe. Pick the kind of land use shown. "
    "Choose \"I don't know\" if you cannot tell."
)
CONSENT = (
    "This is a demonstration study. Your answers are stored anonymously for research on how people and "
    "machine-learning models recognise images. You can stop at any time."
)


@dataclass(frozen=True)
class DemoStudies:
    pets: Study
    eurosat: Study


def demo_data_root(*, explicit: Path | None = None) -> Path:
    """--data, else $DEMO_DATA, else ../shared/data beside the checkout, else the official downloads."""
    for candidate in (explicit, Path(settings.DEMO_DATA) if settings.DEMO_DATA else None,
                      settings.BASE_DIR.parent / "shared" / "data"):
        if candidate and (candidate / "oxford_pets").is_dir():
            return candidate
    if explicit or settings.DEMO_DATA:
        raise DatasetImportError(f"no oxford_pets/ folder in {explicit or settings.DEMO_DATA}")
    return _download_demo_data(dest=settings.VAR_DIR / "downloads")


def _download_demo_data(*, dest: Path) -> Path:
    if not (dest / "oxford_pets" / "annotations").is_dir():
        pets_download(dest=dest / "oxford_pets")
    if not (dest / "eurosat").is_dir():
        try:
            archive = dest / "EuroSAT_RGB.zip"
            urllib.request.urlretrieve(EUROSAT_URL, archive)  # noqa: S310 - fixed https URL
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(dest / "eurosat" / "images")
        except OSError as exc:
            raise DatasetImportError(f"could not download EuroSAT from {EUROSAT_URL} ({exc}); set DEMO_DATA") from None
    return dest


def _manifest(root: Path) -> list[dict]:
    return read_rows(root / "manifest.csv")


def _manifest_from_folders(root: Path) -> list[dict]:
    """A downloaded EuroSAT (a folder per class) gets a deterministic manifest-like listing."""
    rows = []
    for label, class_dir in enumerate(sorted(p for p in (root / "images").rglob("*") if p.is_dir() and any(p.glob("*.jpg")))):
        for i, f in enumerate(sorted(class_dir.glob("*.jpg"))):
            rows.append({"filename": str(f.relative_to(root / "images")), "label": str(label),
                         "label_name": class_dir.name, "split": "test" if i % 5 == 0 else "train"})
    return rows


def _write_subset(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["filename", "label", "label_name", "split"])
        writer.writeheader()
        writer.writerows({k: r[k] for k in writer.fieldnames} for r in rows)
    return path


def pets_demo_rows(*, pets_root: Path) -> list[dict]:
    """Per breed: the demo's test items (official test images first), then its two shots."""
    if (pets_root / "manifest.csv").is_file():
        return pets_demo_split(_manifest(pets_root))
    return pets_demo_split(_pets_rows_from_lists(pets_root))


def _pets_rows_from_lists(pets_root: Path) -> list[dict]:
    from studyapp.services.datasets import plan_oxford_pets

    plan = plan_oxford_pets(root=pets_root)
    index = {name: i for i, (name, _) in enumerate(plan.classes)}
    return [{"filename": im.path.name, "label": str(index[im.label]), "label_name": im.label, "split": im.split}
            for im in plan.images]


def eurosat_demo_rows(*, eurosat_root: Path) -> list[dict]:
    rows = _manifest(eurosat_root) if (eurosat_root / "manifest.csv").is_file() else _manifest_from_folders(eurosat_root)
    return eurosat_demo_split(rows)


def _dataset(*, name: str, rows: list[dict], images_root: Path) -> Dataset:
    existing = Dataset.objects.filter(name=name).first()
    if existing:
        # Imported before items recorded their source file's digest: record it now (scoring needs it).
        dataset_fill_source_hashes(dataset=existing, images_root=images_root)
        return existing
    subset = _write_subset(rows, settings.VAR_DIR / "demo" / f"{name.split()[0].lower()}.csv")
    return dataset_import(name=name, path=subset, fmt=Dataset.Format.CSV, images_root=images_root).dataset


def _study(*, dataset: Dataset, title: str, **fields) -> Study:
    study = Study.objects.filter(dataset=dataset, title=title).first()
    if study is None:
        study = study_create(dataset=dataset, title=title, seed=fields.pop("seed"), **fields)
    return study_open(study=study) if study.status == Study.Status.DRAFT else study


def demo_setup(*, data_root: Path) -> DemoStudies:
    """Import the demo data and create both demo studies; a second call changes nothing."""
    pets_dataset = _dataset(name=PETS_DATASET, rows=pets_demo_rows(pets_root=data_root / "oxford_pets"),
                            images_root=data_root / "oxford_pets" / "images")
    eurosat_dataset = _dataset(name=EUROSAT_DATASET, rows=eurosat_demo_rows(eurosat_root=data_root / "eurosat"),
                               images_root=data_root / "eurosat" / "images")
    common = {"consent_text": CONSENT, "k_per_item": 5, "items_per_participant": 20, "allow_idk": True,
              "design": Study.Design.WITHIN}
    pets = _study(dataset=pets_dataset, title="Pets: humans vs CLIP (CLIP paper §4)", seed=37,
                  instructions=PETS_INSTRUCTIONS, **common)
    eurosat = _study(dataset=eurosat_dataset, title="EuroSAT: a specialised domain", seed=10,
                     instructions=EUROSAT_INSTRUCTIONS, **common)
    return DemoStudies(pets=pets, eurosat=eurosat)
