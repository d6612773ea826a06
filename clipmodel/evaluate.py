"""Zero-shot and few-shot accuracy of a model on one shared dataset: ``python -m clipmodel.evaluate --help``.

Zero-shot uses the dataset's templates and prompt class names; few-shot draws ``k`` shots per class from
``--shot-split`` (seeded trials) and scores every method in FEW_SHOT_METHODS on ``--split``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import torch

from clipmodel.cache import FeatureCache
from clipmodel.data import default_data_root, label_names, read_manifest
from clipmodel.encode import encode_images, encode_with_cache
from clipmodel.fewshot import FEW_SHOT_METHODS, fit_few_shot
from clipmodel.loading import load_clip
from clipmodel.templates import classnames_for, templates_for
from clipmodel.zeroshot import zero_shot_probs, zero_shot_weights


def draw_shots(labels: torch.Tensor, *, shots: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of ``shots`` random examples per class (fewer if a class has fewer)."""
    picked = []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        picked.append(members[torch.randperm(len(members), generator=generator)[:shots]])
    return torch.cat(picked)


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return (probs.argmax(dim=1) == labels).float().mean().item()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m clipmodel.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--model", default=None, help="open_clip name (with --pretrained) if no house checkpoint")
    p.add_argument("--pretrained", default=None)
    p.add_argument("--dataset", default="eurosat")
    p.add_argument("--split", default="test")
    p.add_argument("--shot-split", default=None, help="split to draw shots from (default train/trainval)")
    p.add_argument("--shots", type=int, nargs="*", default=[1, 2])
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--cache", action="store_true", help="reuse/store features in the feature cache")
    args = p.parse_args(argv)

    clip = load_clip(name=args.model, pretrained=args.pretrained, checkpoint=args.checkpoint, device=args.device)
    items = read_manifest(data_root=args.data_root or default_data_root(), dataset=args.dataset)
    classnames = classnames_for(args.dataset, label_names(items))
    shot_split = args.shot_split or ("trainval" if args.dataset == "oxford_pets" else "train")
    evaluated = [i for i in items if i.split == args.split]
    shot_pool = [i for i in items if i.split == shot_split]

    def encode(subset):
        paths = [i.path for i in subset]
        if args.cache:
            return encode_with_cache(clip=clip, images=paths, cache=FeatureCache())
        return encode_images(clip=clip, images=paths)

    started = time.time()
    features, labels = encode(evaluated), torch.tensor([i.label for i in evaluated])
    print(
        f"{clip.fingerprint}: encoded {len(evaluated)} {args.dataset}/{args.split} images in {time.time() - started:.0f}s",
        flush=True,
    )
    weights = zero_shot_weights(clip=clip, classnames=classnames, templates=templates_for(args.dataset))
    zs = zero_shot_probs(image_features=features, text_weights=weights, logit_scale=clip.logit_scale)
    print(f"zero-shot accuracy: {accuracy(zs, labels):.1%} ({len(classnames)} classes)", flush=True)

    if args.shots and args.trials:
        pool_labels = torch.tensor([i.label for i in shot_pool])
        generator = torch.Generator().manual_seed(0)
        draws = {
            k: [draw_shots(pool_labels, shots=k, num_classes=len(classnames), generator=generator) for _ in range(args.trials)]
            for k in args.shots
        }
        needed = sorted({int(j) for trials in draws.values() for d in trials for j in d})
        pool_features = dict(zip(needed, encode([shot_pool[j] for j in needed]), strict=True))
        for k, trials in draws.items():
            scores = {m: [] for m in FEW_SHOT_METHODS}
            for drawn in trials:
                shot_features = torch.stack([pool_features[int(j)] for j in drawn])
                for method in FEW_SHOT_METHODS:
                    classifier = fit_few_shot(
                        method=method,
                        shot_features=shot_features,
                        shot_labels=pool_labels[drawn],
                        num_classes=len(classnames),
                        text_weights=weights,
                        logit_scale=clip.logit_scale,
                    )
                    scores[method].append(accuracy(classifier.predict_proba(features), labels))
            print(
                f"{k}-shot ({args.trials} trials): " + ", ".join(f"{m} {sum(s) / len(s):.1%}" for m, s in scores.items()),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
