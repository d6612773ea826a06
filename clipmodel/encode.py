"""Batched image encoding: decode + preprocess in DataLoader workers, model forward in the main process."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import BinaryIO

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from clipmodel.cache import FeatureCache, image_hash
from clipmodel.loading import LoadedClip

ImageLike = str | os.PathLike | BinaryIO | Image.Image
Progress = Callable[[int, int], None]


class ImageDataset(Dataset):
    """File paths, binary files (e.g. ``io.BytesIO`` of bytes already read) or PIL images -> preprocessed tensors
    (runs inside DataLoader workers)."""

    def __init__(self, images: Sequence[ImageLike], preprocess: Callable):
        self.images = list(images)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = self.images[index]
        if isinstance(image, Image.Image):
            return self.preprocess(image)
        with Image.open(image) as opened:
            return self.preprocess(opened.convert("RGB"))


def default_num_workers(*, device: torch.device, num_images: int, batch_size: int) -> int:
    """Workers only pay off beyond one batch. On CPU they compete with the model's threads for the same cores:
    on 2 cores one worker measured ~0.9x of decoding in-process (docs/clipmodel.md), so CPU boxes need >= 4."""
    if num_images <= batch_size:
        return 0
    cores = os.cpu_count() or 1
    if device.type == "cuda":
        return min(8, max(1, cores - 1))
    return 0 if cores < 4 else min(4, cores // 4)


def encode_images(
    *,
    clip: LoadedClip,
    images: Sequence[ImageLike],
    batch_size: int = 128,
    num_workers: int | None = None,
    progress: Progress | None = None,
) -> torch.Tensor:
    """L2-normalised image embeddings [N, D], float32 on CPU, row i for ``images[i]``.

    ``num_workers=None`` picks a default (see ``default_num_workers``); 0 decodes in this process.
    ``progress(done, total)`` is called after every batch.
    """
    total = len(images)
    if total == 0:
        return torch.empty((0, getattr(clip.model.visual, "output_dim", 0)))
    if num_workers is None:
        num_workers = default_num_workers(device=clip.device, num_images=total, batch_size=batch_size)
    on_gpu = clip.device.type == "cuda"
    loader = DataLoader(
        ImageDataset(images, clip.preprocess),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=on_gpu,
        prefetch_factor=4 if num_workers > 0 else None,
    )
    chunks, done = [], 0
    with torch.inference_mode(), clip.autocast():
        for batch in loader:
            # Pinned host memory + non_blocking lets the copy overlap the previous batch's kernels.
            features = clip.model.encode_image(batch.to(clip.device, non_blocking=True))
            # Kept on the device until the end: a per-batch .cpu() would sync the GPU every batch.
            chunks.append(F.normalize(features.float(), dim=-1))
            done += batch.shape[0]
            if progress is not None:
                progress(done, total)
    return torch.cat(chunks).cpu()


def encode_with_cache(
    *,
    clip: LoadedClip,
    images: Sequence[ImageLike],
    cache: FeatureCache | None = None,
    batch_size: int = 128,
    num_workers: int | None = None,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Like ``encode_images`` but reuses cached features; only content hashes the cache lacks are encoded.

    Identical images (same bytes) are encoded once. ``progress(done, total)`` counts cache hits as done.
    """
    cache = cache if cache is not None else FeatureCache()
    keys = [image_hash(image) for image in images]
    features = cache.get_many(fingerprint=clip.fingerprint, keys=set(keys))
    first_index: dict[str, int] = {}
    for index, key in enumerate(keys):
        if key not in features:
            first_index.setdefault(key, index)
    total, hits = len(images), len(images) - len(first_index)
    if first_index:
        missing_keys = list(first_index)
        encoded = encode_images(
            clip=clip,
            images=[images[first_index[key]] for key in missing_keys],
            batch_size=batch_size,
            num_workers=num_workers,
            progress=None if progress is None else (lambda done, _total: progress(hits + done, total)),
        )
        fresh = dict(zip(missing_keys, encoded, strict=True))
        cache.put_many(fingerprint=clip.fingerprint, features=fresh)
        features.update(fresh)
    elif progress is not None:
        progress(total, total)
    if not keys:
        return encode_images(clip=clip, images=[])
    return torch.stack([features[key] for key in keys])
