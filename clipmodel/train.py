"""Contrastive training or fine-tuning of an open_clip model on image-caption pairs (python -m clipmodel.train).

Pairs come from class names through prompt templates (``--sources eurosat:train ...``; a random template
per image per step) and/or a captions CSV (``filename,caption``). Only ``train``/``trainval`` splits are
accepted, minus optional exclusion lists (file names, or sha256 digests of file bytes), and a deterministic
slice of them is held out for the per-epoch zero-shot accuracy. Every checkpoint records the sha256 of each
image it was trained on (``trained_sha256``), so scoring can refuse a study whose items it has seen. Images
are decoded once into uint8 tensors at the model's input size, so epochs are pure tensor work. The
checkpoint carries its model config, so ``load_clip(checkpoint=path)`` loads it with no other arguments.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from clipmodel.cache import default_cache_dir
from clipmodel.data import (
    DATASETS,
    TRAINING_SPLITS,
    default_data_root,
    files_sha256,
    in_holdout,
    label_names,
    parse_source,
    read_manifest,
)
from clipmodel.house import demo_exclusions, ensure_house_model
from clipmodel.loading import LoadedClip, digests_to_tensor, load_clip, write_checkpoint
from clipmodel.losses import LOSSES, contrastive_loss
from clipmodel.templates import benchmark_match, templates_for
from clipmodel.zeroshot import zero_shot_weights


@dataclass
class PairSet:
    """Training pairs: image i may use any caption in ``caption_options[i]``; ``groups[i]`` = its class."""

    captions: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    sha256: list[str] = field(default_factory=list)  # of each image file's bytes, recorded in the checkpoint
    caption_options: list[list[int]] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    classes: dict[str, list[str]] = field(default_factory=dict)
    templates: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class ValSet:
    dataset: str
    paths: list[Path]
    labels: torch.Tensor
    classnames: list[str]
    templates: list[str]


def prompts_for(dataset: str, names: Sequence[str]) -> tuple[list[str], list[str]]:
    """(prompt names, templates) of a shared dataset: CLIP's own when its classes are a known benchmark's."""
    match = benchmark_match(names)
    if match is not None:
        return match.prompt_names, list(match.benchmark.templates)
    return list(names), list(templates_for(dataset))


def build_pairs(
    *,
    data_root: Path,
    sources: Sequence[str],
    exclude: set[str],
    val_fraction: float,
    captions_csv: Path | None = None,
    images_dir: Path | None = None,
    exclude_sha256: set[str] = frozenset(),
) -> tuple[PairSet, list[ValSet]]:
    """Training pairs and per-dataset held-out sets. ``exclude`` holds ``dataset/filename`` or filenames,
    ``exclude_sha256`` digests of file bytes (a study item's ``source_sha256``); both are neither trained on
    nor held out."""
    pairs, val_sets = PairSet(), []
    next_group = 0
    for source in sources:
        dataset, split = parse_source(source)
        every_item = read_manifest(data_root=data_root, dataset=dataset)
        items = [i for i in every_item if i.split == split]
        classnames, templates = prompts_for(dataset, label_names(every_item))
        pairs.classes[dataset], pairs.templates[dataset] = classnames, templates
        group_offset, caption_offset = next_group, len(pairs.captions)
        next_group += len(classnames)
        pairs.captions += [t.format(name) for name in classnames for t in templates]
        val_paths, val_labels = [], []
        for item, digest in zip(items, files_sha256([i.path for i in items]), strict=True):
            if f"{dataset}/{item.filename}" in exclude or item.filename in exclude or digest in exclude_sha256:
                continue
            if in_holdout(item.filename, val_fraction):
                val_paths.append(item.path)
                val_labels.append(item.label)
                continue
            first = caption_offset + item.label * len(templates)
            pairs.paths.append(item.path)
            pairs.sha256.append(digest)
            pairs.caption_options.append(list(range(first, first + len(templates))))
            pairs.groups.append(group_offset + item.label)
        if val_paths:
            val_sets.append(ValSet(dataset, val_paths, torch.tensor(val_labels), classnames, templates))
    if captions_csv is not None:
        images_dir = images_dir or captions_csv.parent
        caption_ids: dict[str, int] = {}
        first_caption = len(pairs.captions)
        with open(captions_csv, newline="", encoding="utf-8") as f:
            rows = [row for row in csv.DictReader(f) if row["filename"] not in exclude]
        for row, digest in zip(rows, files_sha256([images_dir / row["filename"] for row in rows]), strict=True):
            if digest in exclude_sha256:
                continue
            caption = row["caption"]
            if caption not in caption_ids:
                caption_ids[caption] = len(pairs.captions)
                pairs.captions.append(caption)
            pairs.paths.append(images_dir / row["filename"])
            pairs.sha256.append(digest)
            pairs.caption_options.append([caption_ids[caption]])
            # Identical captions describe the same thing: one group, positives for each other.
            pairs.groups.append(next_group + caption_ids[caption] - first_caption)
    if not pairs.paths:
        raise ValueError("no training pairs: check --sources / --captions-csv and exclusions")
    return pairs, val_sets


def split_preprocess(preprocess: T.Compose) -> tuple[T.Compose, torch.Tensor, torch.Tensor]:
    """The PIL part of an open_clip eval transform (resize, crop, RGB) plus its normalisation mean/std."""
    pil_steps, mean, std = [], None, None
    for step in preprocess.transforms:
        if isinstance(step, T.Normalize):
            mean, std = torch.tensor(step.mean), torch.tensor(step.std)
        elif not isinstance(step, T.ToTensor) and mean is None:
            pil_steps.append(step)
    return T.Compose(pil_steps), mean.view(1, 3, 1, 1), std.view(1, 3, 1, 1)


class _DecodeDataset(Dataset):
    def __init__(self, paths: Sequence[Path], pil_transform: T.Compose):
        self.paths, self.pil_transform = list(paths), pil_transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        with Image.open(self.paths[index]) as image:
            return T.functional.pil_to_tensor(self.pil_transform(image.convert("RGB")))


def predecode(paths: Sequence[Path], pil_transform: T.Compose, *, num_workers: int, progress: bool) -> torch.Tensor:
    """uint8 [N, 3, S, S] images exactly as the eval transform sees them before ToTensor."""
    if not paths:
        return torch.empty(0, dtype=torch.uint8)
    loader = DataLoader(_DecodeDataset(paths, pil_transform), batch_size=256, num_workers=num_workers)
    chunks = []
    bar = _tqdm(total=len(paths), desc="decode", disable=not progress, unit="img")
    for batch in loader:
        chunks.append(batch)
        bar.update(batch.shape[0])
    bar.close()
    return torch.cat(chunks)


def _tqdm(**kwargs):
    from tqdm import tqdm

    return tqdm(file=sys.stderr, dynamic_ncols=True, **kwargs)


def augment(images: torch.Tensor, generator: torch.Generator, *, pad: int = 4) -> torch.Tensor:
    """Random horizontal flip + random translation (reflect pad, crop) on a uint8 batch [B, 3, S, S]."""
    b, _, s, _ = images.shape
    flip = torch.rand(b, generator=generator) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    padded = F.pad(images.float(), (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(s))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(s))[:, None, None, :]
    return padded[torch.arange(b)[:, None, None, None], torch.arange(3)[None, :, None, None], rows, cols]


def training_autocast(precision: str, device: torch.device) -> torch.dtype | None:
    """``auto``: bf16 autocast on CUDA and on CPUs with native bf16 (~2-3x faster here), else fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    native = device.type == "cuda" or (device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return torch.bfloat16 if native else None


def lr_at(step: int, *, total: int, warmup: int, base: float) -> float:
    """Linear warm-up then cosine decay to zero."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: torch.nn.Module, *, lr: float, weight_decay: float) -> torch.optim.AdamW:
    # As open_clip's trainer: no weight decay on gains, biases and the temperature.
    def no_decay(name: str, p: torch.Tensor) -> bool:
        return p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return torch.optim.AdamW(
        [
            {"params": [p for n, p in named if no_decay(n, p)], "weight_decay": 0.0},
            {"params": [p for n, p in named if not no_decay(n, p)], "weight_decay": weight_decay},
        ],
        lr=lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )


def zero_shot_accuracy(*, clip: LoadedClip, images: torch.Tensor, val: ValSet, mean, std) -> float:
    """Top-1 zero-shot accuracy of ``clip`` on pre-decoded held-out images."""
    weights = zero_shot_weights(clip=clip, classnames=val.classnames, templates=val.templates)
    correct = 0
    with torch.no_grad(), clip.autocast():
        for start in range(0, len(images), 512):
            batch = (images[start : start + 512].to(clip.device).float() / 255 - mean) / std
            features = F.normalize(clip.model.encode_image(batch).float(), dim=-1).cpu()
            correct += (features @ weights).argmax(dim=1).eq(val.labels[start : start + 512]).sum().item()
    return correct / len(images)


def train(args: argparse.Namespace) -> Path:
    """Run training as configured by ``build_parser()``; returns the final checkpoint path."""
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    data_root = Path(args.data_root) if args.data_root else default_data_root()
    work_dir = Path(args.work_dir).expanduser() if args.work_dir else default_cache_dir() / "runs" / (args.name or args.model)
    exclude = read_lines(args.exclude) if args.exclude else set()
    pairs, val_sets = build_pairs(
        data_root=data_root,
        sources=args.sources,
        exclude=exclude,
        exclude_sha256=read_lines(args.exclude_sha256) if args.exclude_sha256 else set(),
        val_fraction=args.val_fraction,
        captions_csv=Path(args.captions_csv) if args.captions_csv else None,
        images_dir=Path(args.images_dir) if args.images_dir else None,
    )

    resume_path = work_dir / "last.pt" if args.resume == "auto" else (Path(args.resume) if args.resume else None)
    resume = resume_path if resume_path is not None and resume_path.is_file() else None
    if resume is not None:
        clip = load_clip(checkpoint=resume, device=args.device, dtype="fp32")
        state = torch.load(resume, map_location="cpu", weights_only=True)
        name = state["model_name"]
    else:
        clip = load_clip(
            name=args.model, pretrained=args.pretrained, checkpoint=args.init_checkpoint, device=args.device, dtype="fp32"
        )
        state = None
        name = args.name or (
            args.model if args.pretrained is None and args.init_checkpoint is None else f"{args.model}-finetuned"
        )
    output = Path(args.output).expanduser() if args.output else work_dir / f"{name}.pt"
    model = clip.model
    model_cfg = clip.metadata.get("model_cfg") or open_clip.get_model_config(args.model)
    device = clip.device
    clip = dataclasses.replace(clip, autocast_dtype=training_autocast(args.precision, device))

    pil_transform, mean, std = split_preprocess(clip.preprocess)
    mean, std = mean.to(device), std.to(device)
    print(
        f"{name}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, "
        f"{len(pairs.paths)} training pairs, {len(pairs.captions)} captions, "
        f"held out {', '.join(f'{v.dataset}={len(v.paths)}' for v in val_sets)}",
        flush=True,
    )
    t0 = time.time()
    images = predecode(pairs.paths, pil_transform, num_workers=args.workers, progress=args.progress)
    val_images = [predecode(v.paths, pil_transform, num_workers=args.workers, progress=False) for v in val_sets]
    print(f"decoded {len(images)} images in {time.time() - t0:.0f}s", flush=True)
    tokens = clip.tokenizer(pairs.captions)
    groups = torch.tensor(pairs.groups)
    max_options = max(len(o) for o in pairs.caption_options)
    # Padded [N, K] table of caption ids per image, so sampling a template is one tensor op per batch.
    options = torch.tensor([o + [o[-1]] * (max_options - len(o)) for o in pairs.caption_options])
    option_counts = torch.tensor([len(o) for o in pairs.caption_options])

    steps_per_epoch = len(images) // args.batch_size  # drop the ragged last batch: contrastive needs a full batch
    if steps_per_epoch == 0:
        raise ValueError(f"batch size {args.batch_size} exceeds the {len(images)} training pairs")
    total_steps = steps_per_epoch * args.epochs
    optimizer = make_optimizer(model, lr=args.lr, weight_decay=args.weight_decay)
    history: list[dict[str, Any]] = []
    epoch, step_in_epoch = 0, 0
    losses: list[float] = []  # this epoch's so far: a resumed epoch's mean loss covers all of its steps
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        history, epoch, step_in_epoch = state["history"], state["epoch"], state["step_in_epoch"]
        losses = list(state.get("epoch_losses", []))
        print(f"resumed from {resume} at epoch {epoch} step {step_in_epoch}", flush=True)

    trained_sha256 = digests_to_tensor(set(pairs.sha256))

    def checkpoint(path: Path, *, with_optimizer: bool) -> None:
        extra = {"optimizer": optimizer.state_dict()} if with_optimizer else {}
        write_checkpoint(
            path=path,
            model=model,
            model_name=name,
            model_cfg=model_cfg,
            classes=pairs.classes,
            templates=pairs.templates,
            history=history,
            epoch=epoch,
            step_in_epoch=step_in_epoch,
            train_args={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            trained_sha256=trained_sha256,
            epoch_losses=list(losses),
            **extra,
        )

    while epoch < args.epochs:
        model.train()
        started = time.time()
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed * 1000 + epoch))
        bar = _tqdm(
            total=steps_per_epoch, initial=step_in_epoch, desc=f"epoch {epoch + 1}/{args.epochs}", disable=not args.progress
        )
        while step_in_epoch < steps_per_epoch:
            step = epoch * steps_per_epoch + step_in_epoch
            # Per-step generator: augmentation and caption choice replay exactly after --resume.
            gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
            index = order[step_in_epoch * args.batch_size : (step_in_epoch + 1) * args.batch_size]
            batch = (augment(images[index], gen).to(device) / 255 - mean) / std
            pick = (torch.rand(len(index), generator=gen) * option_counts[index]).long()
            caption_ids = options[index, pick]
            # The text tower runs once per distinct caption in the batch, then features are gathered back.
            unique_ids, inverse = torch.unique(caption_ids, return_inverse=True)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total=total_steps, warmup=args.warmup, base=args.lr)
            with clip.autocast():
                image_features = model.encode_image(batch, normalize=True)
                text_features = model.encode_text(tokens[unique_ids].to(device), normalize=True)[inverse.to(device)]
                loss = contrastive_loss(
                    kind=args.loss,
                    image_features=image_features.float(),
                    text_features=text_features.float(),
                    logit_scale=model.logit_scale.exp(),
                    groups=groups[index].to(device),
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))  # CLIP caps exp(t) at 100 for stability
            losses.append(loss.item())
            step_in_epoch += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", scale=f"{model.logit_scale.exp().item():.1f}")
            if args.checkpoint_every and step_in_epoch % args.checkpoint_every == 0:
                checkpoint(work_dir / "last.pt", with_optimizer=True)
        bar.close()
        model.eval()
        accuracy = {
            v.dataset: zero_shot_accuracy(clip=clip, images=vi, val=v, mean=mean, std=std)
            for v, vi in zip(val_sets, val_images, strict=True)
        }
        epoch, step_in_epoch = epoch + 1, 0
        epoch_loss, losses = sum(losses) / max(1, len(losses)), []
        history.append(
            {
                "epoch": epoch,
                "loss": epoch_loss,
                "seconds": time.time() - started,
                "val_zero_shot": accuracy,
            }
        )
        print(
            f"epoch {epoch}: loss {history[-1]['loss']:.4f}, {history[-1]['seconds']:.0f}s, held-out zero-shot "
            + ", ".join(f"{k} {v:.1%}" for k, v in accuracy.items()),
            flush=True,
        )
        checkpoint(work_dir / "last.pt", with_optimizer=True)

    checkpoint(output, with_optimizer=False)
    print(f"wrote {output}", flush=True)
    return output


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m clipmodel.train", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--house",
        action="store_true",
        help="train the house model with the fixed house recipe into the cache ensure_house_model() reads, "
        "leaving out every image of the demo studies and those of --exclude-sha256 (only --data-root, "
        "--exclude-sha256 and --no-progress apply); prints the checkpoint path. `manage.py house_model` also "
        "leaves out the test items and shots of every study in the database",
    )
    p.add_argument("--model", default="house-vit-64", help="open_clip architecture (default: the house model)")
    p.add_argument("--pretrained", default=None, help="open_clip tag to fine-tune from (e.g. openai)")
    p.add_argument("--init-checkpoint", default=None, help="state dict / our checkpoint to fine-tune from")
    p.add_argument("--name", default=None, help="name recorded in the checkpoint and fingerprint")
    p.add_argument("--data-root", default=None, help="shared data folder (default $DEMO_DATA or ../shared/data)")
    p.add_argument(
        "--sources",
        nargs="*",
        default=["eurosat:train", "cifar10:train", "oxford_pets:trainval"],
        help=f"dataset:split pairs from {DATASETS}; splits limited to {TRAINING_SPLITS}",
    )
    p.add_argument("--captions-csv", default=None, help="extra pairs from a CSV with columns filename,caption")
    p.add_argument("--images-dir", default=None, help="folder the CSV filenames are relative to")
    p.add_argument("--exclude", default=None, help="file listing dataset/filename (or filename) lines to skip")
    p.add_argument("--exclude-sha256", default=None,
                   help="file listing sha256 digests (hex) of image files to skip, e.g. a study's items' source_sha256")
    p.add_argument("--val-fraction", type=float, default=0.05, help="share of training splits held out")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    p.add_argument("--loss", choices=LOSSES, default="label-aware")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto", help="autocast for training")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--workers", type=int, default=2, help="decode workers for the one-off pre-decoding")
    p.add_argument("--work-dir", default=None, help="periodic checkpoints (last.pt) go here (default $HUMANCLIP_CACHE/runs/NAME)")
    p.add_argument("--output", default=None, help="final checkpoint (default WORK_DIR/NAME.pt)")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between last.pt saves (0: per epoch)")
    p.add_argument("--resume", default=None, help="checkpoint to resume, or 'auto' for WORK_DIR/last.pt")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm bars")
    return p


def read_lines(path: str | Path) -> set[str]:
    return {line.strip() for line in Path(path).read_text().splitlines() if line.strip() and not line.startswith("#")}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.house:
        data_root = Path(args.data_root) if args.data_root else default_data_root()
        exclude = demo_exclusions(data_root=data_root)
        if args.exclude_sha256:
            exclude |= read_lines(args.exclude_sha256)
        print(f"leaving out {len(exclude)} images: every image of the demo studies (test items and shot pools)"
              + (f" and those listed in {args.exclude_sha256}" if args.exclude_sha256 else "")
              + ". Studies in a database are not known here: `manage.py house_model` leaves them out too (and "
              "scoring refuses any model trained on a study's items).", flush=True)
        print(ensure_house_model(data_root=data_root, progress=args.progress, exclude_sha256=exclude), flush=True)
    else:
        train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
