"""clipmodel.evaluate (the script behind docs/clipmodel.md's accuracy table) on a tiny model and a toy dataset."""

import io
from contextlib import redirect_stdout

import torch
import torch.nn.functional as F
from PIL import Image

import clipmodel
from clipmodel import evaluate as evaluate_module
from clipmodel.data import in_holdout, read_manifest
from clipmodel.fewshot import DEFAULT_C, DEFAULT_PRIOR_LAMBDA
from clipmodel.loading import write_checkpoint
from clipmodel.templates import IMAGENET_TEMPLATES


def _by_hand_zero_shot_accuracy(clip, items) -> float:
    """Zero-shot accuracy computed without clipmodel's encode/zero-shot code: the model's own towers."""
    with torch.no_grad():
        columns = []
        for name in ("red", "green", "blue"):  # no benchmark: the names themselves, 80 ImageNet templates
            text = clip.model.encode_text(clip.tokenizer([t.format(name) for t in IMAGENET_TEMPLATES]))
            columns.append(F.normalize(F.normalize(text, dim=-1).mean(dim=0), dim=0))
        images = torch.stack([clip.preprocess(Image.open(i.path).convert("RGB")) for i in items])
        features = F.normalize(clip.model.encode_image(images), dim=-1)
    predicted = (features @ torch.stack(columns, dim=1)).argmax(dim=1)
    return (predicted == torch.tensor([i.label for i in items])).float().mean().item()


def test_zero_shot_accuracy_on_the_test_split_matches_a_computation_by_hand(tiny_clip, toy_root):
    items = read_manifest(data_root=toy_root, dataset="toy")
    result = evaluate_module.evaluate(clip=tiny_clip, items=items, split="test", shots=(), trials=0)
    test_items = [i for i in items if i.split == "test"]
    assert result.n_evaluated == 9 and result.n_left_out == 0
    assert result.zero_shot == _by_hand_zero_shot_accuracy(tiny_clip, test_items)


def test_left_out_images_are_neither_evaluated_nor_drawn_as_shots(tiny_clip, toy_root, monkeypatch):
    items = read_manifest(data_root=toy_root, dataset="toy")
    left_out = {"red_0.png", "red_3.png", "green_4.png", "blue_5.png"}  # one test image, three training images
    drawn = []
    real_fit = evaluate_module.fit_few_shot

    def spy(**kwargs):
        drawn.append(kwargs["shot_features"])
        return real_fit(**kwargs)

    encoded = []

    def encode(subset):
        encoded.extend(i.filename for i in subset)
        return clipmodel.encode_images(clip=tiny_clip, images=[i.path for i in subset])

    monkeypatch.setattr(evaluate_module, "fit_few_shot", spy)
    result = evaluate_module.evaluate(clip=tiny_clip, items=items, split="test", shots=(2,), trials=3,
                                      left_out=left_out, encode=encode)
    assert (result.n_evaluated, result.n_left_out) == (8, 4)
    assert not left_out & set(encoded)
    assert len(drawn) == 3 * 3 and all(d.shape == (6, 16) for d in drawn)  # 3 trials x 3 methods, 2 shots x 3 classes
    assert set(result.few_shot[2]) == {f"linear-probe C={DEFAULT_C:g}", f"zero-shot-prior λ={DEFAULT_PRIOR_LAMBDA:g}",
                                       "prototype"}
    assert all(0.0 <= a <= 1.0 for a in result.few_shot[2].values())


def test_the_validation_split_is_the_held_out_slice_and_scores_each_trial_without_its_own_shots(tiny_clip, toy_root,
                                                                                              monkeypatch):
    monkeypatch.setattr(evaluate_module, "VAL_FRACTION", 0.5)  # the toy set is too small for 5% to hold every class
    items = read_manifest(data_root=toy_root, dataset="toy")
    val = [i for i in items if i.split == "train" and in_holdout(i.filename, evaluate_module.VAL_FRACTION)]
    fitted = []
    real_fit = evaluate_module.fit_few_shot
    scored = []
    real_accuracy = evaluate_module.accuracy

    def spy_fit(**kwargs):
        fitted.append(kwargs["shot_features"])
        return real_fit(**kwargs)

    def spy_accuracy(probs, labels):
        scored.append(len(labels))
        return real_accuracy(probs, labels)

    monkeypatch.setattr(evaluate_module, "fit_few_shot", spy_fit)
    monkeypatch.setattr(evaluate_module, "accuracy", spy_accuracy)
    result = evaluate_module.evaluate(clip=tiny_clip, items=items, split="val", shots=(1,), trials=2)
    assert result.n_evaluated == len(val) > 3
    # Zero-shot on every validation image; each trial's three classifiers on all but its 3 shots.
    assert scored == [len(val)] + [len(val) - 3] * 6 and len(fitted) == 6
    assert result.zero_shot == _by_hand_zero_shot_accuracy(tiny_clip, val)
    sweep = evaluate_module.evaluate(clip=tiny_clip, items=items, split="val", shots=(1,), trials=1, sweep=True)
    assert len(sweep.few_shot[1]) == len(evaluate_module.C_GRID) + len(evaluate_module.LAMBDA_GRID) + 1


def test_the_command_loads_a_checkpoint_and_prints_the_accuracies(tiny_clip, tiny_name, toy_root, tmp_path):
    checkpoint = write_checkpoint(path=tmp_path / "tiny.pt", model=tiny_clip.model, model_name="tiny",
                                  model_cfg=clipmodel.loading.open_clip.get_model_config(tiny_name))
    out = io.StringIO()
    with redirect_stdout(out):
        assert evaluate_module.main(["--checkpoint", str(checkpoint), "--dataset", "toy", "--data-root", str(toy_root),
                                     "--shots", "1", "--trials", "2", "--device", "cpu"]) == 0
    lines = out.getvalue().splitlines()
    expected = _by_hand_zero_shot_accuracy(clipmodel.load_clip(checkpoint=checkpoint, device="cpu"),
                                           [i for i in read_manifest(data_root=toy_root, dataset="toy")
                                            if i.split == "test"])
    assert "toy/test: 9 images (0 demo-study images left out)" in lines[0]
    assert lines[1] == f"zero-shot accuracy: {expected:.1%}"
    assert lines[2].startswith(f"1-shot (2 trials): linear-probe C={DEFAULT_C:g} ")
