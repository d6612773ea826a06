"""Images/s of clipmodel.encode_images vs a bare open_clip loop, same images and model, one process.

Bare loop = for each batch: open + preprocess in the main process, torch.stack, model.encode_image under
no_grad. Both include decoding from disk; ours also pays its DataLoader worker start-up. Models have random
weights (speed does not depend on them). Goal: ours >= 0.9x the bare loop.

    .venv/bin/python benchmarks/bench_encode.py --models house-vit-64 ViT-B-32 --n-images 512
    # on a GPU box:
    .venv/bin/python benchmarks/bench_encode.py --device cuda --dtype bf16 --models ViT-B-32 ViT-L-14 \
        --n-images 5000 --batch-size 256 --num-workers 8
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

import clipmodel  # noqa: E402
from clipmodel.data import default_data_root, read_manifest  # noqa: E402


def bare_loop(clip: clipmodel.LoadedClip, paths: list[Path], batch_size: int) -> torch.Tensor:
    chunks = []
    with torch.no_grad(), clip.autocast():
        for start in range(0, len(paths), batch_size):
            batch = []
            for path in paths[start : start + batch_size]:
                with Image.open(path) as image:
                    batch.append(clip.preprocess(image.convert("RGB")))
            features = clip.model.encode_image(torch.stack(batch).to(clip.device))
            chunks.append(F.normalize(features.float(), dim=-1))
    return torch.cat(chunks).cpu()


def timed(fn) -> tuple[float, torch.Tensor]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["house-vit-64", "ViT-B-32"])
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--n-images", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=None, help="encode_images workers (default: its own choice)")
    p.add_argument("--dataset", default="eurosat", help="a folder of the shared data (eurosat, oxford_pets, ...)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--repeats", type=int, default=2, help="timed passes per method; the best is reported")
    args = p.parse_args()

    items = read_manifest(data_root=args.data_root or default_data_root(), dataset=args.dataset)
    stride = max(1, len(items) // args.n_images)  # spread over classes instead of taking one folder
    paths = [item.path for item in items[::stride][: args.n_images]]
    print(
        f"{len(paths)} {args.dataset} images, batch {args.batch_size}, torch threads {torch.get_num_threads()}, "
        f"cpus {os.cpu_count()}",
        flush=True,
    )

    rows = []
    for name in args.models:
        torch.manual_seed(0)
        clip = clipmodel.load_clip(name=name, device=args.device, dtype=args.dtype)
        workers = args.num_workers
        if workers is None:
            workers = clipmodel.encode.default_num_workers(device=clip.device, num_images=len(paths), batch_size=args.batch_size)

        def ours(clip=clip, workers=workers):
            return clipmodel.encode_images(clip=clip, images=paths, batch_size=args.batch_size, num_workers=workers)

        def bare(clip=clip):
            return bare_loop(clip, paths, args.batch_size)

        bare_loop(clip, paths[: args.batch_size], args.batch_size)  # warm-up: allocator, kernels, file cache
        bare_s, ours_s = [], []
        for _ in range(args.repeats):  # interleaved so drift hits both methods alike
            seconds, reference = timed(bare)
            bare_s.append(seconds)
            seconds, got = timed(ours)
            ours_s.append(seconds)
        diff = (got - reference).abs().max().item()
        bare_rate, ours_rate = len(paths) / min(bare_s), len(paths) / min(ours_s)
        rows.append((name, str(clip.device), str(clip.autocast_dtype or "fp32"), workers, bare_rate, ours_rate, diff))
        print(f"  {name}: bare {bare_rate:.1f} img/s, ours {ours_rate:.1f} img/s ({ours_rate / bare_rate:.2f}x)", flush=True)

    print()
    print("| model | device | dtype | workers | bare loop img/s | encode_images img/s | ratio | max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    for name, device, dtype, workers, bare_rate, ours_rate, diff in rows:
        print(
            f"| {name} | {device} | {dtype.replace('torch.', '')} | {workers} | {bare_rate:.1f} | {ours_rate:.1f} "
            f"| {ours_rate / bare_rate:.2f}x | {diff:.1e} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
