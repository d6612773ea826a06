"""The "house model": a small CLIP-style model we train ourselves on the shared training splits (CPU, minutes).

``ensure_house_model`` trains it once per (config, recipe, data manifests, images left out) and caches the
checkpoint under ``<cache_dir>/house/<HOUSE_MODEL_NAME>-<key>/``; later calls return the cached path
immediately. Images are left out by the sha256 of their file bytes, the same digest a study item records of
its source file at import (``Item.source_sha256``), so the exclusions hold whatever name or folder a study's
images were imported from.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from clipmodel.cache import default_cache_dir
from clipmodel.data import default_data_root, files_sha256, manifest_sha256, parse_source, read_manifest
from clipmodel.demo_split import demo_files
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
# Part of the key: checkpoints from before the trainer recorded its training images are never reused.
CHECKPOINT_RECORD = "trained-sha256/1"

_TRAINABLE: dict[tuple, dict[str, str]] = {}


def house_trainable(*, data_root: Path) -> dict[str, str]:
    """``{sha256 of the file: "dataset/filename"}`` for every image in the house model's training splits
    (what it could train on); hashing the ~32,000 files takes about a second, so it is kept per process."""
    key = (str(Path(data_root).resolve()),) + tuple(
        manifest_sha256(data_root=data_root, dataset=parse_source(s)[0]) for s in HOUSE_SOURCES
    )
    if key not in _TRAINABLE:
        trainable = {}
        for source in HOUSE_SOURCES:
            dataset, split = parse_source(source)
            items = [i for i in read_manifest(data_root=data_root, dataset=dataset) if i.split == split]
            trainable.update(zip(files_sha256([i.path for i in items]), (f"{dataset}/{i.filename}" for i in items),
                                 strict=True))
        _TRAINABLE[key] = trainable
    return _TRAINABLE[key]


def demo_exclusions(*, data_root: str | os.PathLike) -> set[str]:
    """sha256 of every image of the demo studies' datasets (test items and shot pools)."""
    root = Path(data_root)
    return {
        digest
        for dataset, names in demo_files(data_root=root).items()
        for digest in files_sha256([root / dataset / "images" / name for name in names])
    }


def house_left_out(*, data_root: Path, exclude_sha256: Iterable[str]) -> list[str]:
    """The digests in ``exclude_sha256`` the house model could otherwise train on, sorted: only these change
    the model, so a study of unrelated images (or of test-split images) does not cost a retraining."""
    return sorted(set(exclude_sha256) & house_trainable(data_root=data_root).keys())


def house_model_key(*, data_root: Path, exclude_sha256: Iterable[str] = ()) -> str:
    """12 hex chars over the architecture config, training recipe, the manifests of the data used and the
    training images left out (a study's test items and shots are never trained on)."""
    spec = {
        "config": json.loads((CONFIG_DIR / f"{HOUSE_MODEL_NAME}.json").read_text()),
        "recipe": HOUSE_RECIPE,
        "sources": {s: manifest_sha256(data_root=data_root, dataset=parse_source(s)[0]) for s in HOUSE_SOURCES},
        "record": CHECKPOINT_RECORD,
        "left_out": house_left_out(data_root=data_root, exclude_sha256=exclude_sha256),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def house_model_path(
    *,
    data_root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    exclude_sha256: Iterable[str] = (),
) -> Path:
    """Where ``ensure_house_model`` keeps (or will keep) the checkpoint for this data, recipe and exclusions."""
    root = Path(data_root) if data_root is not None else default_data_root()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    key = house_model_key(data_root=root, exclude_sha256=exclude_sha256)
    return cache / "house" / f"{HOUSE_MODEL_NAME}-{key}" / f"{HOUSE_MODEL_NAME}.pt"


def ensure_house_model(
    *,
    data_root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    exclude_sha256: Iterable[str] = (),
    on_output: Callable[[str], None] | None = None,
) -> Path:
    """Path of the trained house checkpoint, training it first (minutes on CPU) if not cached.

    ``exclude_sha256`` lists sha256 digests of image files never to train on (the test items and shots of
    studies built on the same images). Safe to call from several processes: one trains while the others
    wait on a file lock, and an interrupted run resumes from its last periodic checkpoint. Training runs
    ``python -m clipmodel.train`` in a child process (its ~3 GB are returned when it ends); its progress goes
    to this process's terminal, or with ``on_output`` line by line (progress bar updates included) to that
    callback, and only its finished lines to stderr.
    """
    root = Path(data_root) if data_root is not None else default_data_root()
    exclude_sha256 = set(exclude_sha256)
    path = house_model_path(data_root=root, cache_dir=cache_dir, exclude_sha256=exclude_sha256)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.is_file():  # another process may have finished while we waited
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
            left_out = house_left_out(data_root=root, exclude_sha256=exclude_sha256)
            if left_out:
                exclude_file = path.parent / "exclude-sha256.txt"
                exclude_file.write_text("".join(f"{digest}\n" for digest in left_out))
                argv += ["--exclude-sha256", str(exclude_file)]
            if not progress:
                argv.append("--no-progress")
            command = [sys.executable, "-m", "clipmodel.train", *argv]
            package_root = str(Path(__file__).resolve().parents[1])
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
            if on_output is None:
                code = subprocess.run(command, env=env).returncode
            else:
                code = run_streaming(command, env=env, on_output=on_output)
            if code != 0 or not path.is_file():
                raise RuntimeError(f"training the house model failed (see its output above): {' '.join(command)}")
    return path


def run_streaming(command: list[str], *, env: dict[str, str], on_output: Callable[[str], None]) -> int:
    """Run ``command``; each line of its output (stdout and stderr, a progress bar's carriage-return updates
    included) goes to ``on_output`` as it comes, and each newline-terminated line also to our stderr."""
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as child:
        pending = b""
        while chunk := child.stdout.read1(65536):
            pending += chunk
            *parts, pending = re.split(rb"(\r|\n)", pending)
            for text, end in zip(parts[::2], parts[1::2], strict=True):
                line = text.decode(errors="replace").strip()
                if line:
                    on_output(line)
                    if end == b"\n":
                        print(line, file=sys.stderr, flush=True)
        if pending.strip():
            on_output(pending.decode(errors="replace").strip())
        return child.wait()
