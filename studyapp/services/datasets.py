"""Dataset import: a folder per class, a CSV manifest, or the official Oxford-IIIT Pet layout.

Every source is first turned into a plan (classes + images with label and split), every image is
decoded and normalised, and only then is anything written — in one transaction. Problems are
collected, not raised one at a time, so a researcher sees the whole list at once.
"""

import csv
import hashlib
import io
import logging
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from django.db import IntegrityError, transaction

from studyapp.models import IDK, ClassLabel, Dataset, Item
from studyapp.services.images import ImageRejected, NormalisedImage, image_normalise, image_path, image_store

logger = logging.getLogger(__name__)

PETS_URLS = (
    "https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz",
    "https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz",
)
PETS_SPLIT_FILES = {"trainval": "trainval.txt", "test": "test.txt"}
SPLIT_FOLDERS = {"train", "val", "test", "trainval"}
# Unsplit sources: this share of each class is test, the rest train (see _deterministic_split).
TEST_FRACTION = 0.2


class DatasetImportError(Exception):
    """Import refused; `problems` lists every reason, one line each."""

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = problems or []
        detail = "".join(f"\n  - {p}" for p in self.problems[:50])
        more = f"\n  … and {len(self.problems) - 50} more" if len(self.problems) > 50 else ""
        super().__init__(f"{message}{detail}{more}")


@dataclass(frozen=True)
class SourceImage:
    name: str  # as the researcher knows it (relative path); admin-only afterwards
    path: Path
    label: str
    split: str


@dataclass
class ImportPlan:
    classes: list[tuple[str, str]]  # (display name, prompt name) in class-index order
    images: list[SourceImage]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class ImportReport:
    dataset: Dataset
    imported: int
    skipped: list[str]
    notes: list[str]


def readable_class_name(raw: str) -> str:
    """`american_pit_bull_terrier` → `American Pit Bull Terrier`; `Bengal` stays."""
    return " ".join(word[:1].upper() + word[1:] for word in raw.replace("_", " ").replace("-", " ").split())


def _inside(root: Path, relative: str) -> Path | None:
    """The file under root, or None when the name is absolute or escapes root (.., symlinks)."""
    if not relative or relative.startswith(("/", "\\")) or Path(relative).is_absolute() or ":" in relative[:3]:
        return None
    if ".." in Path(relative.replace("\\", "/")).parts:
        return None
    candidate = (root / relative).resolve()
    return candidate if candidate.is_relative_to(root.resolve()) else None


def _read_text(path: Path) -> str:
    """A text file as UTF-8 (a BOM is fine), or an error that says what to do."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetImportError(
            f"{path.name}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
        ) from None


def _read_classes_file(path: Path) -> list[tuple[str, str]]:
    """One class per line, in index order: `name` or `name,prompt name`."""
    classes = []
    for line in _read_text(path).splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, prompt = line.partition(",")
            classes.append((name.strip(), prompt.strip() or name.strip()))
    return classes


def _deterministic_split(images: list[SourceImage], test_fraction: float) -> list[SourceImage]:
    """Split an unsplit source per class: the last ``test_fraction`` of its files in the order of the sha1 of
    their relative path are test. Reimports agree, and it is the rule of the shared EuroSAT copy's 80/20
    split, so a folder import of that copy puts in test exactly the images the house model never trains on
    (scoring still refuses any model trained on a study's items, whatever the split)."""
    by_class: dict[str, list[SourceImage]] = {}
    for image in images:
        by_class.setdefault(image.label, []).append(image)
    out = []
    for members in by_class.values():
        members.sort(key=lambda im: hashlib.sha1(im.name.replace("\\", "/").encode()).hexdigest())
        n_test = round(len(members) * test_fraction)
        for i, image in enumerate(members):
            split = "test" if i >= len(members) - n_test else "train"
            out.append(SourceImage(image.name, image.path, image.label, split))
    return out


def plan_folder(*, root: Path, test_fraction: float = TEST_FRACTION) -> ImportPlan:
    """`root/<class>/*` or `root/<split>/<class>/*` (split in train, val, test, trainval)."""
    top = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    has_splits = bool(top) and all(p.name in SPLIT_FOLDERS for p in top)
    split_dirs = [(p.name, p) for p in top] if has_splits else [("", root)]
    images, problems, class_names = [], [], []
    for split, split_dir in split_dirs:
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if class_dir.name not in class_names:
                class_names.append(class_dir.name)
            files = sorted(f for f in class_dir.iterdir() if f.is_file() and not f.name.startswith("."))
            if not files:
                problems.append(f"{class_dir.relative_to(root)}/: empty class folder (no images)")
            for f in files:
                if not f.resolve().is_relative_to(root.resolve()):
                    # Like the CSV importer: nothing outside the dataset root is ever read.
                    problems.append(f"{f.relative_to(root)}: a link that leaves the dataset root; refused")
                    continue
                images.append(SourceImage(str(f.relative_to(root)), f, class_dir.name, split))
    if not has_splits:
        images = _deterministic_split(images, test_fraction)
    classes = [(readable_class_name(c), readable_class_name(c).lower()) for c in class_names]
    rename = dict(zip(class_names, (c[0] for c in classes), strict=True))
    # Folder names are the class names a benchmark's copies use (e.g. EuroSAT's "SeaLake").
    classes = _with_prompt_defaults(classes, source_names=class_names)
    images = [SourceImage(im.name, im.path, rename[im.label], im.split) for im in images]
    return ImportPlan(classes=classes, images=images, problems=problems)


def _csv_rows(reader: csv.DictReader, csv_path: Path):
    """(line number, row) pairs; a row the csv module cannot parse (e.g. a field over its 128 KiB limit)
    is an import error, not a crash."""
    line_no = 1
    try:
        for row in reader:
            line_no = reader.line_num
            yield line_no, row
    except csv.Error as exc:
        raise DatasetImportError(f"{csv_path.name}: line {line_no + 1}: not a valid CSV row ({exc})") from None


def plan_csv(*, csv_path: Path, images_root: Path | None = None, test_fraction: float = TEST_FRACTION) -> ImportPlan:
    """`filename,label_name[,split]`; filenames relative to images_root (default: the CSV's
    folder, or its `images/` subfolder when that exists). Nothing outside the root is ever read."""
    if images_root is None:
        images_root = csv_path.parent / "images" if (csv_path.parent / "images").is_dir() else csv_path.parent
    text = _read_text(csv_path)
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip() for c in reader.fieldnames or []]
    missing = {"filename", "label_name"} - set(columns)
    if missing:
        raise DatasetImportError(
            f"{csv_path.name}: missing column(s) {', '.join(sorted(missing))}; "
            f"expected a header `filename,label_name[,split]`, found `{','.join(columns)}`"
        )
    reader.fieldnames = columns
    images, problems, class_order = [], [], {}
    for line_no, row in _csv_rows(reader, csv_path):
        name = (row.get("filename") or "").strip()
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            problems.append(f"line {line_no}: the file name contains control characters; refused")
            continue
        label = (row.get("label_name") or "").strip()
        split = (row.get("split") or "").strip()
        path = _inside(images_root, name)
        if path is None:
            problems.append(f"line {line_no}: {name!r} is an absolute path or leaves the dataset root; refused")
            continue
        if not label:
            problems.append(f"line {line_no}: {name}: empty label_name")
            continue
        if (row.get("label") or "").strip().isdecimal():
            class_order.setdefault(label, int(row["label"]))
        images.append(SourceImage(name, path, label, split))
    labels = sorted({im.label for im in images}, key=lambda lab: (class_order.get(lab, 1 << 30), lab))
    if images and not all(im.split for im in images):
        if any(im.split for im in images):
            problems.append("the split column is empty on some rows; fill it on every row or on none")
        else:
            images = _deterministic_split(images, test_fraction)
    return ImportPlan(classes=_with_prompt_defaults([(lab, lab.lower()) for lab in labels]), images=images,
                      problems=problems)


def plan_oxford_pets(*, root: Path) -> ImportPlan:
    """The official layout: `images/*.jpg` and `annotations/{list,trainval,test}.txt`.

    The lists describe all 7,349 images; a partial copy is legitimate, so absent files are
    counted and reported, not errors. Class order is the official CLASS-ID order.
    """
    annotations = root / "annotations"
    if not (annotations / "list.txt").is_file() or not (root / "images").is_dir():
        raise DatasetImportError(f"{root}: not the Oxford-IIIT Pet layout (need images/ and annotations/list.txt)")
    class_by_id: dict[int, str] = {}
    for stem, class_id in _pets_list(annotations / "list.txt"):
        class_by_id.setdefault(class_id, stem.rsplit("_", 1)[0])
    if sorted(class_by_id) != list(range(1, len(class_by_id) + 1)):
        raise DatasetImportError("annotations/list.txt: class ids are not 1..N")
    split_of: dict[str, tuple[str, int]] = {}
    for split, filename in PETS_SPLIT_FILES.items():
        path = annotations / filename
        if not path.is_file():
            raise DatasetImportError(f"annotations/{filename} is missing")
        for stem, class_id in _pets_list(path):
            split_of[stem] = (split, class_id)
    images, absent = [], 0
    for stem, (split, class_id) in sorted(split_of.items()):
        path = root / "images" / f"{stem}.jpg"
        if class_id not in class_by_id:
            raise DatasetImportError(f"{stem}: unknown class id {class_id}")
        if path.is_file():
            images.append(SourceImage(path.name, path, readable_class_name(class_by_id[class_id]), split))
        else:
            absent += 1
    classes = _with_prompt_defaults([(readable_class_name(class_by_id[i]),) * 2 for i in sorted(class_by_id)])
    notes = [f"{absent} image(s) named in the official lists are absent from images/ (a partial copy)"] if absent else []
    listed = {f"{stem}.jpg" for stem in split_of}
    unlisted = sum(1 for p in (root / "images").iterdir() if p.suffix.lower() == ".jpg" and p.name not in listed)
    if unlisted:
        notes.append(f"{unlisted} image(s) in images/ are in neither trainval.txt nor test.txt and were left out")
    return ImportPlan(classes=classes, images=images, notes=notes)


def _with_prompt_defaults(classes: list[tuple[str, str]], *, source_names: list[str] | None = None
                          ) -> list[tuple[str, str]]:
    """CLIP's own prompt names when the classes are a benchmark's (Oxford-IIIT Pets, EuroSAT, CIFAR-10), else
    the given ones; clipmodel.templates holds the one table of them."""
    from clipmodel.templates import benchmark_match  # the model stack is imported only when importing data

    names = [display for display, _ in classes]
    match = benchmark_match(names) or (benchmark_match(source_names) if source_names else None)
    if match is None:
        return classes
    return [(display, prompt) for (display, _), prompt in zip(classes, match.prompt_names, strict=True)]


def _pets_list(path: Path) -> list[tuple[str, int]]:
    """(image stem, class id) per line of an official list file; a malformed line is named, not a crash."""
    out = []
    for line_no, line in enumerate(_read_text(path).splitlines(), start=1):
        if line.startswith("#") or not line.strip():
            continue
        fields = line.split()
        if len(fields) < 2 or not fields[1].isdecimal():  # not isdigit: "²" passes that, int() refuses it
            raise DatasetImportError(f"annotations/{path.name} line {line_no}: expected `IMAGE CLASS-ID SPECIES "
                                     f"BREED-ID`, found {line[:80]!r}")
        out.append((fields[0], int(fields[1])))
    return out


def pets_download(*, dest: Path, timeout: float = 10.0) -> Path:
    """Fetch and unpack the official archives into dest (for users who are online)."""
    dest.mkdir(parents=True, exist_ok=True)
    for url in PETS_URLS:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                with tarfile.open(fileobj=response, mode="r|gz") as archive:
                    archive.extractall(dest, filter="data")
        except (TimeoutError, urllib.error.URLError, OSError) as exc:
            raise DatasetImportError(
                f"could not download the Oxford-IIIT Pet dataset from {url} ({exc}). "
                "Offline? Copy the official images/ and annotations/ folders to a directory and pass its path "
                "(or set DEMO_DATA to a folder containing oxford_pets/)."
            ) from None
    return dest


def _validate_plan(plan: ImportPlan, *, classes: list[tuple[str, str]] | None) -> list[tuple[str, str]]:
    classes = classes or plan.classes
    names = [c[0] for c in classes]
    if any(n.strip().lower() == IDK for n in names):
        plan.problems.append(f"a class is named {IDK!r}, which is reserved for \"I don't know\" answers; rename it")
    lowered = [n.lower() for n in names]
    for n in sorted({n for n in lowered if lowered.count(n) > 1}):
        plan.problems.append(f"class name {n!r} appears twice (names are case-insensitive)")
    known = set(names)
    for im in plan.images:
        if im.label not in known:
            plan.problems.append(f"{im.name}: unknown label {im.label!r}")
    used = {im.label for im in plan.images}
    for name in names:
        if name not in used:
            plan.problems.append(f"class {name!r} has no images")
    if not plan.images and not plan.problems:
        plan.problems.append("no images found")
    return classes


def dataset_import(
    *,
    name: str,
    path: Path,
    fmt: str,
    skip_bad: bool = False,
    classes_file: Path | None = None,
    images_root: Path | None = None,
    test_fraction: float = TEST_FRACTION,
    progress=None,
) -> ImportReport:
    """Import a dataset all-or-nothing (or, with skip_bad, everything that is valid)."""
    path = Path(path)
    if Dataset.objects.filter(name=name).exists():
        raise DatasetImportError(f"a dataset named {name!r} already exists")
    if not path.exists():
        raise DatasetImportError(f"{path}: no such file or directory")
    if fmt == Dataset.Format.FOLDER:
        plan = plan_folder(root=path, test_fraction=test_fraction)
    elif fmt == Dataset.Format.CSV:
        plan = plan_csv(csv_path=path, images_root=images_root, test_fraction=test_fraction)
    elif fmt == Dataset.Format.OXFORD_PETS:
        plan = plan_oxford_pets(root=path)
    else:
        raise DatasetImportError(f"unknown format {fmt!r}; use folder, csv or oxford-pets")
    classes = _validate_plan(plan, classes=_read_classes_file(classes_file) if classes_file else None)
    if plan.problems and not skip_bad:
        raise DatasetImportError(f"import of {name!r} refused, nothing was written", plan.problems)

    normalised: list[tuple[SourceImage, NormalisedImage, str]] = []
    skipped = list(plan.problems)
    seen: dict[str, str] = {}
    for i, source in enumerate(plan.images):
        if progress:
            progress(i, len(plan.images))
        if source.label not in {c[0] for c in classes}:
            continue
        try:
            raw = source.path.read_bytes()
            image = image_normalise(raw=raw)
        except ImageRejected as exc:
            skipped.append(f"{source.name}: {exc}")
            continue
        except OSError as exc:
            skipped.append(f"{source.name}: unreadable ({exc.strerror or exc})")
            continue
        if image.content_hash in seen:
            skipped.append(f"{source.name}: duplicate content of {seen[image.content_hash]}")
            continue
        seen[image.content_hash] = source.name
        # The source file's own digest: what a model's training record is compared with (import re-encodes).
        normalised.append((source, image, hashlib.sha256(raw).hexdigest()))
    if skipped and not skip_bad:
        raise DatasetImportError(f"import of {name!r} refused, nothing was written", skipped)
    surviving = {source.label for source, _, _ in normalised}
    empty = [c for c, _ in classes if c not in surviving]
    if empty:
        raise DatasetImportError(
            f"import of {name!r} refused, nothing was written",
            skipped + [f"class {c!r} has no valid images" for c in empty],
        )
    dataset = _write_dataset(name=name, path=path, fmt=fmt, classes=classes, images=normalised)
    return ImportReport(dataset=dataset, imported=len(normalised), skipped=skipped if skip_bad else [], notes=plan.notes)


def _write_dataset(
    *, name: str, path: Path, fmt: str, classes: list[tuple[str, str]],
    images: list[tuple[SourceImage, NormalisedImage, str]],
) -> Dataset:
    created_files = []
    try:
        with transaction.atomic():
            dataset = Dataset.objects.create(name=name, source_format=fmt, source_path=str(path))
            labels = {
                display: ClassLabel.objects.create(dataset=dataset, index=i, name=display, prompt_name=prompt)
                for i, (display, prompt) in enumerate(classes)
            }
            rows = []
            for source, image, source_sha256 in images:
                if not image_path(relative_path=image.relative_path).exists():
                    created_files.append(image_store(image=image))
                rows.append(
                    Item(
                        dataset=dataset, content_hash=image.content_hash, image=image.relative_path,
                        split=source.split, label=labels[source.label], width=image.width, height=image.height,
                        original_filename=source.name, source_sha256=source_sha256,
                    )
                )
            Item.objects.bulk_create(rows, batch_size=500)
    except IntegrityError as exc:
        _remove(created_files)
        raise DatasetImportError(f"import of {name!r} refused by the database, nothing was written: {exc}") from None
    except BaseException:
        _remove(created_files)
        raise
    return dataset


def dataset_fill_source_hashes(*, dataset: Dataset, images_root: Path) -> int:
    """Record ``source_sha256`` for items imported before it existed, from their files under ``images_root``;
    a file is accepted only if it still normalises to the item's stored image. Returns items filled."""
    filled = 0
    for item in dataset.items.filter(source_sha256="").only("pk", "content_hash", "original_filename"):
        path = _inside(images_root, item.original_filename)
        try:
            raw = path.read_bytes() if path else b""
            same = raw and image_normalise(raw=raw).content_hash == item.content_hash
        except (OSError, ImageRejected):
            same = False
        if same:
            filled += Item.objects.filter(pk=item.pk, source_sha256="").update(source_sha256=hashlib.sha256(raw).hexdigest())
    return filled


def _remove(paths: list[Path]) -> None:
    for p in paths:
        p.unlink(missing_ok=True)
