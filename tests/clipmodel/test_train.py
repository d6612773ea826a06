import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

import clipmodel
from clipmodel import house
from clipmodel import train as train_module
from clipmodel.loading import training_record


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
    excluded = toy_root / "toy" / "images" / "green_9.png"
    (tmp_path / "exclude.txt").write_text(hashlib.sha256(excluded.read_bytes()).hexdigest() + "\n")
    output = train_module.train(_args(tiny_name, toy_root, tmp_path / "run", "--exclude-sha256",
                                      str(tmp_path / "exclude.txt")))
    clip = clipmodel.load_clip(checkpoint=output, device="cpu")
    history = clip.metadata["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["loss"] < history[0]["loss"]
    assert set(history[-1]["val_zero_shot"]) == {"toy"}
    assert clip.metadata["classes"] == {"toy": ["red", "green", "blue"]}
    assert clip.name == tiny_name and "optimizer" not in clip.metadata
    # The checkpoint records the sha256 of exactly the files it trained on: the train split, less the
    # held-out slice and the excluded file.
    pairs, _ = train_module.build_pairs(data_root=toy_root, sources=["toy:train"], exclude=set(), val_fraction=0.2)
    trained = {hashlib.sha256(p.read_bytes()).hexdigest() for p in pairs.paths}
    assert training_record(output)["sha256"] == trained - {hashlib.sha256(excluded.read_bytes()).hexdigest()}
    assert len(trained) == len(pairs.paths) > 30 and training_record(output)["base"] is None


def test_resume_after_a_crash_continues_from_the_last_periodic_checkpoint_to_the_uninterrupted_runs_weights(
    tiny_name, toy_root, tmp_path, monkeypatch
):
    calls = {"n": 0}
    real_loss = train_module.contrastive_loss

    def counting_loss(**kwargs):
        calls["n"] += 1
        return real_loss(**kwargs)

    monkeypatch.setattr(train_module, "contrastive_loss", counting_loss)
    straight = train_module.train(_args(tiny_name, toy_root, tmp_path / "straight"))
    steps_in_full_run = calls["n"]

    def crashing_loss(**kwargs):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt("simulated crash")
        return real_loss(**kwargs)

    calls["n"] = 0
    monkeypatch.setattr(train_module, "contrastive_loss", crashing_loss)
    with pytest.raises(KeyboardInterrupt):
        train_module.train(_args(tiny_name, toy_root, tmp_path / "crashed", "--checkpoint-every", "2"))
    calls["n"] = 0
    monkeypatch.setattr(train_module, "contrastive_loss", counting_loss)
    resumed = train_module.train(_args(tiny_name, toy_root, tmp_path / "crashed", "--resume", "auto"))

    # Steps 1-6 ran before the crash and steps 1-6 were checkpointed (every 2): only the rest runs again.
    assert calls["n"] == steps_in_full_run - 6
    a = torch.load(straight, weights_only=True)
    b = torch.load(resumed, weights_only=True)
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=1e-5, atol=1e-6)
    assert [h["epoch"] for h in b["history"]] == [1, 2, 3, 4]
    assert [h["loss"] for h in b["history"]] == pytest.approx([h["loss"] for h in a["history"]], rel=1e-5)


def _house_data(root):
    """The three house datasets in the shared layout, two small generated images each (train and test)."""
    rng = np.random.default_rng(1)
    for dataset in ("eurosat", "cifar10", "oxford_pets"):
        (root / dataset / "images").mkdir(parents=True)
        train_split = "trainval" if dataset == "oxford_pets" else "train"
        rows = []
        for split in (train_split, "test"):
            name = f"{dataset}-{split}.png"
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / dataset / "images" / name)
            rows.append(f"{name},0,x,{split}\n")
        (root / dataset / "manifest.csv").write_text("filename,label,label_name,split\n" + "".join(rows))


def test_ensure_house_model_returns_the_cached_checkpoint_without_retraining(tmp_path):
    data_root = tmp_path / "data"
    _house_data(data_root)
    cache = tmp_path / "cache"
    expected = house.house_model_path(data_root=data_root, cache_dir=cache)
    assert expected.parent.parent == cache / "house"
    assert expected.name == "house-vit-64.pt"
    expected.parent.mkdir(parents=True)
    expected.write_bytes(b"already trained")
    # The images are far too few to train on, so any attempt to train would fail.
    assert clipmodel.ensure_house_model(data_root=data_root, cache_dir=cache, progress=False) == expected

    def digest(dataset, split):
        return hashlib.sha256((data_root / dataset / "images" / f"{dataset}-{split}.png").read_bytes()).hexdigest()

    # Leaving out a training image (a study's test item or shot) is a different model ...
    trainable = digest("cifar10", "train")
    assert house.house_model_path(data_root=data_root, cache_dir=cache, exclude_sha256=[trainable]) != expected
    # ... but images it would never train on (a test split, another data set) change nothing: no retraining.
    unrelated = [digest("cifar10", "test"), hashlib.sha256(b"some other image").hexdigest()]
    assert house.house_model_path(data_root=data_root, cache_dir=cache, exclude_sha256=unrelated) == expected
    # Different data -> a different cache key -> a different checkpoint path.
    (data_root / "cifar10" / "manifest.csv").write_text("filename,label,label_name,split\ncifar10-test.png,0,x,train\n")
    assert house.house_model_path(data_root=data_root, cache_dir=cache) != expected


def test_the_house_model_leaves_out_every_image_of_the_demo_studies(tmp_path):
    """`python -m clipmodel.train --house` has no database: the demo datasets (test items and shot pools) come
    from clipmodel.demo_split, which studyapp.services.demo builds the demo datasets from."""
    from clipmodel.demo_split import PETS_SHOTS_PER_CLASS, PETS_TEST_PER_CLASS, demo_files

    root = tmp_path / "data"
    rows = [{"filename": f"b{label}_{i}.jpg", "label": str(label), "label_name": f"B{label}",
             "split": "test" if i < 2 else "trainval"} for label in range(3) for i in range(10)]
    (root / "oxford_pets").mkdir(parents=True)
    (root / "oxford_pets" / "manifest.csv").write_text(
        "filename,label,label_name,split\n" + "".join(f"{r['filename']},{r['label']},{r['label_name']},{r['split']}\n"
                                                       for r in rows))
    files = demo_files(data_root=root)["oxford_pets"]
    per_class = PETS_TEST_PER_CLASS + PETS_SHOTS_PER_CLASS
    assert len(files) == 3 * per_class
    for label in range(3):
        mine = [f for f in files if f.startswith(f"b{label}_")]
        assert {f"b{label}_0.jpg", f"b{label}_1.jpg"} <= set(mine)  # the official test images come first
    images = root / "oxford_pets" / "images"
    images.mkdir()
    for r in rows:
        (images / r["filename"]).write_bytes(r["filename"].encode())
    assert house.demo_exclusions(data_root=root) == {hashlib.sha256(f.encode()).hexdigest() for f in files}


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
