import csv

import numpy as np
import pytest
import torch
from PIL import Image

import clipmodel
from clipmodel import house
from clipmodel import train as train_module

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    """A tiny dataset in the shared-data layout: 3 colour classes, 14 train and 3 test images each."""
    root = tmp_path_factory.mktemp("data")
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


def _args(tiny_name, toy_root, work_dir, *extra):
    return train_module.build_parser().parse_args(
        [
            "--model",
            tiny_name,
            "--data-root",
            str(toy_root),
            "--sources",
            "toy:train",
            "--epochs",
            "4",
            "--batch-size",
            "8",
            "--lr",
            "5e-3",
            "--warmup",
            "2",
            "--val-fraction",
            "0.2",
            "--work-dir",
            str(work_dir),
            "--workers",
            "0",
            "--no-progress",
            *extra,
        ]
    )


def test_training_never_sees_test_items_or_excluded_files(toy_root):
    with pytest.raises(ValueError, match="never test items"):
        train_module.parse_source("toy:test")
    pairs, val_sets = train_module.build_pairs(
        data_root=toy_root, sources=["toy:train"], exclude={"toy/red_5.png", "blue_7.png"}, val_fraction=0.2
    )
    used = {p.name for p in pairs.paths} | {p.name for v in val_sets for p in v.paths}
    assert not any(name.endswith(("_0.png", "_1.png", "_2.png")) for name in used)  # the test split
    assert "red_5.png" not in used and "blue_7.png" not in used
    assert len(used) == 3 * 14 - 2
    assert not {p.name for p in pairs.paths} & {p.name for v in val_sets for p in v.paths}  # held-out is disjoint
    # Each image's caption options are its own class's prompts.
    for path, options in zip(pairs.paths, pairs.caption_options, strict=True):
        assert all(path.name.split("_")[0] in pairs.captions[i] for i in options)


def test_a_few_training_steps_lower_the_loss_and_the_checkpoint_loads_with_no_extra_args(tiny_name, toy_root, tmp_path):
    output = train_module.train(_args(tiny_name, toy_root, tmp_path / "run"))
    clip = clipmodel.load_clip(checkpoint=output, device="cpu")
    history = clip.metadata["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["loss"] < history[0]["loss"]
    assert set(history[-1]["val_zero_shot"]) == {"toy"}
    assert clip.metadata["classes"] == {"toy": ["red", "green", "blue"]}
    assert clip.name == tiny_name and "optimizer" not in clip.metadata


def test_resume_after_a_crash_reproduces_the_uninterrupted_run(tiny_name, toy_root, tmp_path, monkeypatch):
    straight = train_module.train(_args(tiny_name, toy_root, tmp_path / "straight"))

    calls = {"n": 0}
    real_loss = train_module.contrastive_loss

    def crashing_loss(**kwargs):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt("simulated crash")
        return real_loss(**kwargs)

    monkeypatch.setattr(train_module, "contrastive_loss", crashing_loss)
    with pytest.raises(KeyboardInterrupt):
        train_module.train(_args(tiny_name, toy_root, tmp_path / "crashed", "--checkpoint-every", "2"))
    monkeypatch.setattr(train_module, "contrastive_loss", real_loss)
    resumed = train_module.train(_args(tiny_name, toy_root, tmp_path / "crashed", "--resume", "auto"))

    a = torch.load(straight, weights_only=True)
    b = torch.load(resumed, weights_only=True)
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=1e-5, atol=1e-6)
    assert [h["epoch"] for h in b["history"]] == [1, 2, 3, 4]


def test_ensure_house_model_returns_the_cached_checkpoint_without_retraining(tmp_path):
    data_root = tmp_path / "data"
    for dataset in ("eurosat", "cifar10", "oxford_pets"):
        (data_root / dataset).mkdir(parents=True)
        (data_root / dataset / "manifest.csv").write_text(f"filename,label,label_name,split\n{dataset}.jpg,0,x,train\n")
    expected = house.house_model_path(data_root=data_root, cache_dir=tmp_path / "cache")
    assert expected.parent.parent == tmp_path / "cache" / "house"
    assert expected.name == "house-vit-64.pt"
    expected.parent.mkdir(parents=True)
    expected.write_bytes(b"already trained")
    # The images do not exist, so any attempt to train would fail.
    assert clipmodel.ensure_house_model(data_root=data_root, cache_dir=tmp_path / "cache", progress=False) == expected
    # Excluded items (a study's test images) are part of the key; an empty list is not.
    excluded = house.house_model_path(data_root=data_root, cache_dir=tmp_path / "cache", exclude=["cifar10/cifar10.jpg"])
    assert excluded != expected
    assert house.house_model_path(data_root=data_root, cache_dir=tmp_path / "cache", exclude=[]) == expected
    # Different data -> a different cache key -> a different checkpoint path.
    (data_root / "cifar10" / "manifest.csv").write_text("filename,label,label_name,split\nother.jpg,0,x,train\n")
    assert house.house_model_path(data_root=data_root, cache_dir=tmp_path / "cache") != expected


def test_captions_csv_pairs_share_a_group_only_when_captions_match(toy_root, tmp_path):
    captions = tmp_path / "captions.csv"
    captions.write_text(
        "filename,caption\nred_3.png,a red square\nred_4.png,a red square\nblue_3.png,a blue square\ngreen_3.png,x\n"
    )
    pairs, val_sets = train_module.build_pairs(
        data_root=toy_root,
        sources=[],
        exclude={"green_3.png"},
        val_fraction=0.0,
        captions_csv=captions,
        images_dir=toy_root / "toy" / "images",
    )
    assert [p.name for p in pairs.paths] == ["red_3.png", "red_4.png", "blue_3.png"]
    assert [pairs.captions[o[0]] for o in pairs.caption_options] == ["a red square", "a red square", "a blue square"]
    assert pairs.groups[0] == pairs.groups[1] != pairs.groups[2]
    assert val_sets == []
