"""On-disk image-feature cache keyed by (model fingerprint, image content hash).

Layout: ``<root>/features/<fingerprint slug>/<hash[:2]>/<hash>.npy``, one float32 vector per file. Writes go
to a temporary file in the same directory and are moved into place with ``os.replace``, so concurrent writers
(Celery workers, reruns) never expose a partial file; the last identical write wins.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
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


class FeatureCache:
    """Image embeddings on disk; ``get_many`` returns hits only, ``put_many`` stores vectors."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def _path(self, fingerprint: str, key: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{8,128}", key):
            raise ValueError(f"cache keys are hex content hashes, got {key!r}")
        return self.root / "features" / _slug(fingerprint) / key[:2] / f"{key}.npy"

    def get_many(self, *, fingerprint: str, keys: Iterable[str]) -> dict[str, torch.Tensor]:
        """{key: float32 vector} for the keys present; missing or unreadable entries are left out."""
        found = {}
        for key in keys:
            path = self._path(fingerprint, key)
            try:
                found[key] = torch.from_numpy(np.load(path, allow_pickle=False))
            except (FileNotFoundError, ValueError, OSError, EOFError):
                continue
        return found

    def put_many(self, *, fingerprint: str, features: Mapping[str, torch.Tensor]) -> None:
        """Store each vector atomically (temp file + os.replace)."""
        for key, vector in features.items():
            path = self._path(fingerprint, key)
            path.parent.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            np.save(buffer, vector.detach().to(torch.float32).cpu().numpy(), allow_pickle=False)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:8]}-", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(buffer.getvalue())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
