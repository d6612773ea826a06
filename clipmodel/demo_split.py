"""Which shared-data images the demo studies use: their test items and the pools their shots are drawn from.

Framework-free, so that ``python -m clipmodel.train --house`` leaves every one of them out of the house
model's training without a database; ``studyapp.services.demo`` builds the demo datasets from the same rows.
Each demo dataset holds only its test items and its shot pool, so "every image of a demo dataset" is a
superset of what its study can ever show, whatever the study's seed draws.
"""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

PETS_TEST_PER_CLASS = 5
# Exactly the two shots per breed the study shows: Pets has ~10 trainval images per breed here, and every
# image in a shot pool is kept out of the house model's training.
PETS_SHOTS_PER_CLASS = 2
EUROSAT_TEST_PER_CLASS = 10
EUROSAT_TRAIN_PER_CLASS = 10
PETS_SEED = 2021
EUROSAT_SEED = 2019


def pets_demo_split(rows: list[dict], *, seed: int = PETS_SEED) -> list[dict]:
    """Per breed: PETS_TEST_PER_CLASS test rows (official test images first), then PETS_SHOTS_PER_CLASS
    train rows (the shot pool) from the rest; the other images are not part of the demo."""
    rng = random.Random(seed)
    by_label: dict[str, list[dict]] = {}
    for row in rows:
        if row["split"] in ("trainval", "test"):
            by_label.setdefault(row["label"], []).append(row)
    out = []
    for label in sorted(by_label, key=int):
        members = sorted(by_label[label], key=lambda r: r["filename"])
        rng.shuffle(members)
        members.sort(key=lambda r: r["split"] != "test")  # stable: official test images first, shuffled
        for i, row in enumerate(members[: PETS_TEST_PER_CLASS + PETS_SHOTS_PER_CLASS]):
            out.append({**row, "split": "test" if i < PETS_TEST_PER_CLASS else "train"})
    return out


def eurosat_demo_split(rows: list[dict], *, seed: int = EUROSAT_SEED) -> list[dict]:
    """EUROSAT_TEST_PER_CLASS test rows per class from the test split, EUROSAT_TRAIN_PER_CLASS from train."""
    rng = random.Random(seed)
    out = []
    for split, n in (("test", EUROSAT_TEST_PER_CLASS), ("train", EUROSAT_TRAIN_PER_CLASS)):
        by_label: dict[str, list[dict]] = {}
        for row in rows:
            if row["split"] == split:
                by_label.setdefault(row["label"], []).append(row)
        for label in sorted(by_label, key=int):
            members = sorted(by_label[label], key=lambda r: r["filename"])
            out.extend(rng.sample(members, min(n, len(members))))
    return out


def read_rows(manifest: Path) -> list[dict]:
    with manifest.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def demo_files(*, data_root: str | os.PathLike) -> dict[str, list[str]]:
    """``{dataset folder: [filenames relative to its images/]}`` of every image in the demo datasets, for the
    shared-data layout (``<data_root>/<dataset>/manifest.csv``); datasets without a manifest are left out."""
    root = Path(data_root)
    out = {}
    for dataset, split in (("oxford_pets", pets_demo_split), ("eurosat", eurosat_demo_split)):
        manifest = root / dataset / "manifest.csv"
        if manifest.is_file():
            out[dataset] = [row["filename"] for row in split(read_rows(manifest))]
    return out
