"""Fixtures for clipmodel tests: CPU only, a tiny random open_clip model, generated images. No Django."""

import csv
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import open_clip  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import clipmodel  # noqa: E402

TINY_NAME = "test-tiny-vit"
TINY_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(autouse=True)
def _media_root():
    """Overrides the project-wide Django fixture of the same name: these tests touch no Django settings."""


@pytest.fixture(scope="session")
def tiny_name(tmp_path_factory) -> str:
    """Registers a tiny architecture (embed 16, 32 px) with open_clip, the way house configs are registered."""
    path = tmp_path_factory.mktemp("configs") / f"{TINY_NAME}.json"
    path.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(path)
    return TINY_NAME


@pytest.fixture
def tiny_clip(tiny_name) -> clipmodel.LoadedClip:
    torch.manual_seed(0)
    return clipmodel.load_clip(name=tiny_name, device="cpu")


@pytest.fixture(scope="session")
def image_files(tmp_path_factory) -> list:
    """Eight distinct random 40x40 RGB PNG files (content differs, so content hashes differ)."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(8):
        path = folder / f"img_{i}.png"
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory):
    """A tiny dataset in the shared-data layout: 3 colour classes, 14 train and 3 test images each."""
    root = tmp_path_factory.mktemp("toydata")
    images = root / "toy" / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for label, (name, rgb) in enumerate(COLOURS.items()):
        for i in range(17):
            pixels = np.clip(np.array(rgb) + rng.normal(0, 25, (40, 40, 3)), 0, 255).astype(np.uint8)
            filename = f"{name}_{i}.png"
            Image.fromarray(pixels).save(images / filename)
            rows.append({"filename": filename, "label": label, "label_name": name, "split": "test" if i < 3 else "train"})
    with open(root / "toy" / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["filename", "label", "label_name", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return root
