"""The "house model": a small CLIP-style model we train ourselves on the shared training splits (CPU, minutes).

``ensure_house_model`` trains it once per (config, recipe, data manifests) and caches the checkpoint under
``<cache_dir>/house/<HOUSE_MODEL_NAME>-<key>/``; later calls return the cached path immediately.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from clipmodel.cache import default_cache_dir
from clipmodel.data import default_data_root, manifest_sha256
from clipmodel.loading import CONFIG_DIR

HOUSE_MODEL_NAME = "house-vit-64"
HOUSE_SOURCES = ("eurosat:train", "cifar10:train", "oxford_pets:trainval")
# The recipe the cache key covers; changing any value trains a new model on next use.
HOUSE_RECIPE: dict[str, str] = {
    "epochs": "5",
    "batch-size": "256",
    "lr": "1e-3",
    "weight-decay": "0.1",
    "warmup": "100",
    "loss": "label-aware",
    "seed": "0",
    "val-fraction": "0.05",
    "precision": "auto",
}


def house_model_key(*, data_root: Path, exclude: Sequence[str] = ()) -> str:
    """12 hex chars over the architecture config, training recipe, the manifests of the data used and the
    images left out (a study's test items are never trained on)."""
    from clipmodel.train import parse_source  # lazy: keeps `python -m clipmodel.train` free of a double import

    spec = {
        "config": json.loads((CONFIG_DIR / f"{HOUSE_MODEL_NAME}.json").read_text()),
        "recipe": HOUSE_RECIPE,
        "sources": {s: manifest_sha256(data_root=data_root, dataset=parse_source(s)[0]) for s in HOUSE_SOURCES},
    }
    if exclude:  # only when present, so models trained before exclusions existed keep their key
        spec["exclude"] = sorted(set(exclude))
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def house_model_path(
    *, data_root: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None, exclude: Sequence[str] = ()
) -> Path:
    """Where ``ensure_house_model`` keeps (or will keep) the checkpoint for this data and recipe."""
    root = Path(data_root) if data_root is not None else default_data_root()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    key = house_model_key(data_root=root, exclude=exclude)
    return cache / "house" / f"{HOUSE_MODEL_NAME}-{key}" / f"{HOUSE_MODEL_NAME}.pt"


def ensure_house_model(
    *,
    data_root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    exclude: Sequence[str] = (),
) -> Path:
    """Path of the trained house checkpoint, training it first (minutes on CPU) if not cached.

    ``exclude`` lists ``dataset/filename`` lines never to train on (the test items of studies built on the
    same images). Safe to call from several processes: one trains while the others wait on a file lock, and
    an interrupted run resumes from its last periodic checkpoint.
    """
    root = Path(data_root) if data_root is not None else default_data_root()
    path = house_model_path(data_root=root, cache_dir=cache_dir, exclude=exclude)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.is_file():  # another process may have finished while we waited
            from clipmodel.train import build_parser, train

            options = {
                "model": HOUSE_MODEL_NAME,
                "name": HOUSE_MODEL_NAME,
                "data-root": str(root),
                "work-dir": str(path.parent),
                "output": str(path),
                "resume": "auto",
                **HOUSE_RECIPE,
            }
            argv = [arg for key, value in options.items() for arg in (f"--{key}", value)]
            argv += ["--sources", *HOUSE_SOURCES]
            if exclude:
                exclude_file = path.parent / "exclude.txt"
                exclude_file.write_text("".join(f"{line}\n" for line in sorted(set(exclude))))
                argv += ["--exclude", str(exclude_file)]
            if not progress:
                argv.append("--no-progress")
            train(build_parser().parse_args(argv))
    return path
