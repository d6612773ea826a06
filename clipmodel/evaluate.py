"""Zero-shot and few-shot accuracy of a model on one shared dataset: ``python -m clipmodel.evaluate --help``.

Zero-shot uses the dataset's prompt names and templates (CLIP's own for a known benchmark); few-shot draws
``k`` shots per class (seeded trials) and scores every method in FEW_SHOT_METHODS. Every image of the demo
studies (their test items and shot pools) is always left out, so no number here is measured or tuned on a
study's items.

``--split test`` (default): evaluate on the test split, draw shots from the training split.
``--split val``: the house model's validation slice, the 5% of the training split it holds out of training
(``in_holdout``): shots are drawn from it and accuracy is measured on the rest of it, so neither was trained on.
``--sweep`` scores the linear probe over a grid of C and the zero-shot prior over a grid of λ: how both
defaults in clipmodel.fewshot were chosen (on ``--split val``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from clipmodel.cache import FeatureCache
from clipmodel.data import Item, default_data_root, in_holdout, label_names, read_manifest
from clipmodel.demo_split import demo_files
from clipmodel.encode import encode_images, encode_with_cache
from clipmodel.fewshot import DEFAULT_C, DEFAULT_PRIOR_LAMBDA, fit_few_shot
from clipmodel.loading import LoadedClip, load_clip
from clipmodel.train import prompts_for
from clipmodel.zeroshot import zero_shot_probs, zero_shot_weights

C_GRID = (0.01, 0.1, 0.316, 1.0, 3.16, 10.0, 31.6, 100.0, 316.0, 1000.0)
LAMBDA_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
VAL_FRACTION = 0.05  # the house recipe's --val-fraction: what it never trains on


@dataclass
class Evaluation:
    split: str
    n_evaluated: int
    n_left_out: int  # demo-study images removed from the evaluated split and the shot pool
    zero_shot: float
    # shots per class -> {"linear-probe C=0.316": mean accuracy over trials, ...}
    few_shot: dict[int, dict[str, float]] = field(default_factory=dict)


def draw_shots(labels: torch.Tensor, *, shots: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of ``shots`` random examples per class (fewer if a class has fewer)."""
    picked = []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        picked.append(members[torch.randperm(len(members), generator=generator)[:shots]])
    return torch.cat(picked)


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return (probs.argmax(dim=1) == labels).float().mean().item()


def variants(*, sweep: bool) -> list[tuple[str, str, dict[str, float]]]:
    """(label, method, fit_few_shot keyword arguments) of every classifier to score."""
    if not sweep:
        return [
            (f"linear-probe C={DEFAULT_C:g}", "linear-probe", {}),
            (f"zero-shot-prior λ={DEFAULT_PRIOR_LAMBDA:g}", "zero-shot-prior", {}),
            ("prototype", "prototype", {}),
        ]
    return ([(f"linear-probe C={c:g}", "linear-probe", {"C": c}) for c in C_GRID]
            + [(f"zero-shot-prior λ={lam:g}", "zero-shot-prior", {"prior_lambda": lam}) for lam in LAMBDA_GRID]
            + [("prototype", "prototype", {})])


def evaluate(
    *,
    clip: LoadedClip,
    items: list[Item],
    split: str,
    shots: Sequence[int] = (1, 2),
    trials: int = 5,
    sweep: bool = False,
    left_out: set[str] = frozenset(),
    encode: Callable[[list[Item]], torch.Tensor] | None = None,
) -> Evaluation:
    """Accuracy of ``clip`` on one dataset's manifest ``items`` (see the module docstring for ``split``);
    ``left_out`` holds filenames never used (the demo studies' images)."""
    encode = encode or (lambda subset: encode_images(clip=clip, images=[i.path for i in subset]))
    classnames, templates = prompts_for(items[0].dataset, label_names(items))
    training_split = "trainval" if any(i.split == "trainval" for i in items) else "train"
    if split == "val":
        candidates = [i for i in items if i.split == training_split and in_holdout(i.filename, VAL_FRACTION)]
        evaluated = [i for i in candidates if i.filename not in left_out]
        pool = evaluated
    else:
        candidates = [i for i in items if i.split in (split, training_split)]
        evaluated = [i for i in candidates if i.split == split and i.filename not in left_out]
        pool = [i for i in candidates if i.split == training_split and i.filename not in left_out]
    n_left_out = sum(1 for i in candidates if i.filename in left_out)
    features, labels = encode(evaluated), torch.tensor([i.label for i in evaluated])
    weights = zero_shot_weights(clip=clip, classnames=classnames, templates=templates)
    zs = zero_shot_probs(image_features=features, text_weights=weights, logit_scale=clip.logit_scale)
    result = Evaluation(split=split, n_evaluated=len(evaluated), n_left_out=n_left_out, zero_shot=accuracy(zs, labels))
    if not shots or not trials:
        return result
    pool_labels = torch.tensor([i.label for i in pool])
    generator = torch.Generator().manual_seed(0)
    draws = {k: [draw_shots(pool_labels, shots=k, num_classes=len(classnames), generator=generator)
                 for _ in range(trials)] for k in shots}
    if pool is evaluated:
        pool_features = dict(enumerate(features))
    else:
        needed = sorted({int(j) for trials_ in draws.values() for d in trials_ for j in d})
        pool_features = dict(zip(needed, encode([pool[j] for j in needed]), strict=True))
    for k, drawn_trials in draws.items():
        scores: dict[str, list[float]] = {}
        for drawn in drawn_trials:
            # In the val split the shots come from the evaluated images: score on the others only.
            keep = torch.ones(len(evaluated), dtype=torch.bool)
            if pool is evaluated:
                keep[drawn] = False
            shot_features = torch.stack([pool_features[int(j)] for j in drawn])
            for label, method, kwargs in variants(sweep=sweep):
                classifier = fit_few_shot(method=method, shot_features=shot_features, shot_labels=pool_labels[drawn],
                                          num_classes=len(classnames), text_weights=weights,
                                          logit_scale=clip.logit_scale, **kwargs)
                scores.setdefault(label, []).append(accuracy(classifier.predict_proba(features[keep]), labels[keep]))
        result.few_shot[k] = {label: sum(s) / len(s) for label, s in scores.items()}
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m clipmodel.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--model", default=None, help="open_clip name (with --pretrained) if no house checkpoint")
    p.add_argument("--pretrained", default=None)
    p.add_argument("--dataset", nargs="+", default=["eurosat"], help="one or more shared datasets")
    p.add_argument("--split", default="test", help="test, or val: the validation slice held out of training")
    p.add_argument("--shots", type=int, nargs="*", default=[1, 2])
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--sweep", action="store_true", help=f"linear probe over C {C_GRID}, prior over λ {LAMBDA_GRID}")
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--cache", action="store_true", help="reuse/store features in the feature cache")
    args = p.parse_args(argv)

    clip = load_clip(name=args.model, pretrained=args.pretrained, checkpoint=args.checkpoint, device=args.device)
    data_root = args.data_root or default_data_root()

    def encode(subset):
        paths = [i.path for i in subset]
        if args.cache:
            return encode_with_cache(clip=clip, images=paths, cache=FeatureCache())
        return encode_images(clip=clip, images=paths)

    pooled: dict[str, list[float]] = {}
    for dataset in args.dataset:
        started = time.time()
        result = evaluate(clip=clip, items=read_manifest(data_root=data_root, dataset=dataset), split=args.split,
                          shots=args.shots, trials=args.trials, sweep=args.sweep,
                          left_out=set(demo_files(data_root=data_root).get(dataset, [])), encode=encode)
        print(f"{clip.fingerprint}: {dataset}/{args.split}: {result.n_evaluated} images "
              f"({result.n_left_out} demo-study images left out), {time.time() - started:.0f}s", flush=True)
        print(f"zero-shot accuracy: {result.zero_shot:.1%}", flush=True)
        for k, scores in result.few_shot.items():
            print(f"{k}-shot ({args.trials} trials): " + ", ".join(f"{m} {a:.1%}" for m, a in scores.items()),
                  flush=True)
            for label, value in scores.items():
                pooled.setdefault(label, []).append(value)
    if args.sweep and pooled:
        # The choice: per method, the value with the best mean accuracy over every dataset and shot count.
        means = {label: sum(v) / len(v) for label, v in pooled.items()}
        for method in ("linear-probe", "zero-shot-prior"):
            best = max((label for label in means if label.startswith(method)), key=means.__getitem__)
            print(f"best {method} over {', '.join(args.dataset)} x {args.shots} shots: {best} "
                  f"(mean {means[best]:.1%})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
