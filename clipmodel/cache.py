"""On-disk image-feature cache keyed by (model fingerprint, image content hash).

Layout: ``<root>/features/<fingerprint slug>/packs/<random name>.npz``. Each ``put_many`` writes one pack (its
keys and their float32 vectors) to a temporary file in the same directory and moves it into place with
``os.replace``, so concurrent writers (Celery workers, reruns) never expose a partial file. Packs never change
once written, so a process reads the keys of each pack once and afterwards only those of new packs. One file per
call rather than per vector: on a slow file system a file per image cost about 1 ms, as much as encoding the
image with a small model. Caches written before packs (``<hash[:2]>/<hash>.npy``, a vector each) are still read.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def default_cache_dir() -> Path:
    """``$HUMANCLIP_CACHE`` else ``~/.cache/humanclip``."""
    return Path(os.environ.get("HUMANCLIP_CACHE") or Path.home() / ".cache" / "humanclip").expanduser()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 1 MiB pieces (checkpoints can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def image_hash(image: str | os.PathLike | Image.Image) -> str:
    """sha256 of a file's bytes, or of a PIL image's mode, size and pixels."""
    if not isinstance(image, Image.Image):
        return file_sha256(image)
    digest = hashlib.sha256()
    digest.update(f"{image.mode}:{image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def _slug(fingerprint: str) -> str:
    # Readable prefix for humans browsing the cache, hash suffix so distinct fingerprints never collide.
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", fingerprint)[:80]
    return f"{readable}-{hashlib.sha256(fingerprint.encode()).hexdigest()[:10]}"


# {pack path: {key: row}}; packs are immutable, so what a process has read of one stays true.
_PACK_INDEX: dict[Path, dict[str, int]] = {}
_PACK_LOCK = threading.Lock()


def _pack_index(path: Path) -> dict[str, int]:
    with _PACK_LOCK:
        index = _PACK_INDEX.get(path)
    if index is None:
        with np.load(path, allow_pickle=False) as pack:
            index = {str(key): row for row, key in enumerate(pack["keys"])}
        with _PACK_LOCK:
            _PACK_INDEX[path] = index
    return index


class FeatureCache:
    """Image embeddings on disk; ``get_many`` returns hits only, ``put_many`` stores vectors."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def _folder(self, fingerprint: str) -> Path:
        return self.root / "features" / _slug(fingerprint)

    @staticmethod
    def _check_key(key: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{8,128}", key):
            raise ValueError(f"cache keys are hex content hashes, got {key!r}")
        return key

    def _path(self, fingerprint: str, key: str) -> Path:
        """Where a cache from before packs kept one vector."""
        return self._folder(fingerprint) / key[:2] / f"{self._check_key(key)}.npy"

    def get_many(self, *, fingerprint: str, keys: Iterable[str]) -> dict[str, torch.Tensor]:
        """{key: float32 vector} for the keys present; missing or unreadable entries are left out."""
        wanted = {self._check_key(key) for key in keys}
        found: dict[str, torch.Tensor] = {}
        packs = self._folder(fingerprint) / "packs"
        try:
            names = sorted(name for name in os.listdir(packs) if name.endswith(".npz"))
        except FileNotFoundError:
            names = []
        for name in names:
            if not wanted:
                break
            try:
                index = _pack_index(packs / name)
                rows = {key: index[key] for key in wanted if key in index}
                if rows:
                    with np.load(packs / name, allow_pickle=False) as pack:
                        vectors = pack["vectors"]
                    found.update((key, torch.from_numpy(vectors[row].copy())) for key, row in rows.items())
                    wanted -= rows.keys()
            except (ValueError, OSError, EOFError, KeyError):
                continue  # unreadable pack: its images are encoded again
        # Only where such a cache exists: otherwise every missing key cost a failed open (~10 us each).
        legacy = self._legacy_prefixes(fingerprint) if wanted else set()
        for key in wanted:
            if key[:2] not in legacy:
                continue
            try:
                found[key] = torch.from_numpy(np.load(self._path(fingerprint, key), allow_pickle=False))
            except (FileNotFoundError, ValueError, OSError, EOFError):
                continue
        return found

    def _legacy_prefixes(self, fingerprint: str) -> set[str]:
        """The ``<hash[:2]>`` folders of a cache written before packs."""
        try:
            return {name for name in os.listdir(self._folder(fingerprint)) if re.fullmatch(r"[0-9a-f]{2}", name)}
        except FileNotFoundError:
            return set()

    def put_many(self, *, fingerprint: str, features: Mapping[str, torch.Tensor]) -> None:
        """Store the vectors as one pack, atomically (temporary file + os.replace)."""
        if not features:
            return
        keys = [self._check_key(key) for key in features]
        vectors = np.stack([vector.detach().to(torch.float32).cpu().numpy() for vector in features.values()])
        packs = self._folder(fingerprint) / "packs"
        packs.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=packs, prefix=".pack-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, keys=np.array(keys), vectors=vectors)
            os.replace(tmp, packs / f"{uuid.uuid4().hex}.npz")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
