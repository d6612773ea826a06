"""Reading the shared data manifests (``<data_root>/<dataset>/manifest.csv`` + ``images/``)."""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

DATASETS: tuple[str, ...] = ("eurosat", "cifar10", "oxford_pets")
TRAINING_SPLITS = ("train", "trainval")


def default_data_root() -> Path:
    """``$DEMO_DATA`` else ``../shared/data`` next to the repository."""
    env = os.environ.get("DEMO_DATA")
    if env:
        return Path(env).expanduser()
    return (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()


@dataclass(frozen=True)
class Item:
    """One manifest row; ``path`` is absolute, ``filename`` as in the manifest (relative to images/)."""

    dataset: str
    filename: str
    path: Path
    label: int
    label_name: str
    split: str


def read_manifest(*, data_root: str | os.PathLike, dataset: str) -> list[Item]:
    """All rows of one dataset's manifest, in file order."""
    root = Path(data_root) / dataset
    with open(root / "manifest.csv", newline="", encoding="utf-8") as f:
        return [
            Item(
                dataset=dataset,
                filename=row["filename"],
                path=root / "images" / row["filename"],
                label=int(row["label"]),
                label_name=row["label_name"],
                split=row["split"],
            )
            for row in csv.DictReader(f)
        ]


def files_sha256(paths: list[Path]) -> list[str]:
    """sha256 of each file's bytes: what a study item records of its source file at import (``source_sha256``),
    so a checkpoint's training images compare with a study's items although imports re-encode them."""
    return [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths]


def parse_source(source: str) -> tuple[str, str]:
    """``"eurosat:train"`` -> ("eurosat", "train"); refuses any split that is not a training split."""
    dataset, _, split = source.partition(":")
    split = split or ("trainval" if dataset == "oxford_pets" else "train")
    if split not in TRAINING_SPLITS:
        raise ValueError(f"{source!r}: only {TRAINING_SPLITS} splits may be trained on (never test items)")
    return dataset, split


def manifest_sha256(*, data_root: str | os.PathLike, dataset: str) -> str:
    return hashlib.sha256((Path(data_root) / dataset / "manifest.csv").read_bytes()).hexdigest()


def label_names(items: list[Item]) -> list[str]:
    """Class names indexed by label (index i = label i), from any rows that cover every label."""
    names: dict[int, str] = {}
    for item in items:
        names.setdefault(item.label, item.label_name)
    if sorted(names) != list(range(len(names))):
        raise ValueError("labels are not a contiguous 0..C-1 range")
    return [names[i] for i in range(len(names))]


def in_holdout(filename: str, fraction: float) -> bool:
    """Deterministic ``fraction`` of files (by a salted sha1 of the name) held out of training for validation."""
    # Salted: EuroSAT's own train/test split sorts by the unsalted sha1 of the same names.
    return int(hashlib.sha1(f"holdout:{filename}".encode()).hexdigest()[:8], 16) / 0x1_0000_0000 < fraction
