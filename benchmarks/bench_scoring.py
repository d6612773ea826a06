"""Items/s of a whole scoring run (Celery + a real worker + DB writes) vs the bare clipmodel pipeline.

Both score the same test images of a Pets study in zero-, one- and two-shot: load the model, build the
text weights, encode and fit the shots, encode the test images once, classify them in every condition.
The end-to-end side is timed from the run's creation to its `finished_at` (database timestamps); it
adds the queue, the chunk claims, the feature cache, the per-item file check and writing every
prediction. "cold" = the worker has not loaded the model yet; "warm" = the median of the later repeats
(model already loaded in both). The feature cache is emptied before every end-to-end repeat, so every
image is really encoded. Goal: end-to-end >= 0.9x bare.

    .venv/bin/python benchmarks/bench_scoring.py                       # house model, CPU, 296 items
    .venv/bin/python benchmarks/bench_scoring.py --per-class 20 --chunk-size 128 --repeats 4
    .venv/bin/python benchmarks/bench_scoring.py --model ViT-B-32 --pretrained openai --device cuda  # GPU box

Uses a private Redis (redis-server on a free port), SQLite database, media root and cache, all in a
temporary folder; nothing of the checkout's var/ is touched.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.processes import free_port  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "oxford_pets")
    p.add_argument("--per-class", type=int, default=8, help="test images per breed (37 breeds)")
    p.add_argument("--chunk-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", default="", help="open_clip name (default: the house model config)")
    p.add_argument("--pretrained", default="")
    p.add_argument("--checkpoint", default="", help="default: the trained house model if cached, else random")
    p.add_argument("--device", default="auto")
    p.add_argument("--fewshot", default="linear-probe,zero-shot-prior",
                   help="comma-separated few-shot methods, each scored in the one- and two-shot conditions")
    p.add_argument("--num-workers", type=int, default=None,
                   help="bare side's DataLoader workers (default: 0 on CPU, where decoding in-process was faster "
                        "than clipmodel's default of 1 worker on 2 cores; clipmodel's default on GPU)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (worker log, database)")
    return p.parse_args()


def write_subset(*, data: Path, per_class: int, out: Path) -> Path:
    """Per breed: 2 shot-pool images (train) and `per_class` test images, from the shared manifest."""
    rows = list(csv.DictReader((data / "manifest.csv").open(newline="", encoding="utf-8")))
    by_label: dict[str, list[dict]] = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row)
    chosen = []
    for label in sorted(by_label, key=int):
        members = sorted(by_label[label], key=lambda r: r["filename"])
        if len(members) < per_class + 2:
            continue
        chosen += [{**r, "split": "train"} for r in members[:2]]
        chosen += [{**r, "split": "test"} for r in members[2 : 2 + per_class]]
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["filename", "label", "label_name", "split"])
        writer.writeheader()
        writer.writerows({k: r[k] for k in writer.fieldnames} for r in chosen)
    return out


def main() -> int:
    args = parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-scoring-"))
    redis_port = free_port()
    env = {
        "VAR_DIR": str(tmp / "var"),
        "DATABASE_URL": f"sqlite:///{tmp / 'bench.sqlite3'}",
        "MEDIA_ROOT": str(tmp / "media"),
        "HUMANCLIP_CACHE": str(tmp / "cache"),
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "SCORING_CHUNK_SIZE": str(args.chunk_size),
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DB_CONN_MAX_AGE": "0",
        "PYTHONUNBUFFERED": "1",
    }
    os.environ.update(env)
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return run(args, tmp=tmp, env=env, procs=procs)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")


def run(args, *, tmp: Path, env: dict, procs: list) -> int:
    import django

    django.setup()
    import torch
    from django.core.management import call_command

    import clipmodel
    from evaluator.models import ModelRun
    from evaluator.services.runs import model_run_create
    from evaluator.services.specs import model_run_default_name, model_spec_resolve
    from studyapp.models import Dataset, ShotExample, StudyItem
    from studyapp.services.datasets import dataset_import
    from studyapp.services.images import image_path
    from studyapp.services.studies import study_create, study_open

    if args.num_workers is None:
        args.num_workers = None if torch.cuda.is_available() and args.device != "cpu" else 0
    call_command("migrate", verbosity=0)
    subset = write_subset(data=args.data, per_class=args.per_class, out=tmp / "subset.csv")
    dataset = dataset_import(name="Oxford-IIIT Pet (bench)", path=subset, fmt=Dataset.Format.CSV,
                             images_root=args.data / "images").dataset
    study = study_open(study=study_create(dataset=dataset, title="bench", seed=1))
    n_items = StudyItem.objects.filter(study=study).count()

    checkpoint = args.checkpoint
    if not checkpoint and not args.model:
        from clipmodel.house import demo_exclusions, house_model_path

        trained = house_model_path(data_root=args.data.parent, cache_dir=Path.home() / ".cache" / "humanclip",
                                   exclude_sha256=demo_exclusions(data_root=args.data.parent))
        checkpoint = str(trained) if trained.is_file() else str(random_house_checkpoint(tmp / "house-random.pt"))
    spec = model_spec_resolve(model_name=args.model, pretrained=args.pretrained, checkpoint=checkpoint)
    print(f"{n_items} test items x 3 conditions, {dataset.classes.count()} classes, chunk size {args.chunk_size}, "
          f"model {spec.model_name} ({'checkpoint ' + Path(checkpoint).name if checkpoint else spec.pretrained}), "
          f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs")

    log = (tmp / "worker.log").open("w")
    procs.append(subprocess.Popen(
        [str(Path(sys.executable).with_name("celery")), "-A", "config", "worker", "-Q", "scoring", "-c", "1",
         "--pool", "solo", "-n", "bench@%h", "--without-gossip", "--without-mingle", "-l", "info"],
        cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT))
    ready_deadline = time.monotonic() + 120
    from evaluator.celery_app import app

    while not (app.control.ping(timeout=0.5) or []):
        if time.monotonic() > ready_deadline or procs[-1].poll() is not None:
            raise SystemExit(f"worker did not start; see {tmp / 'worker.log'}")

    test_paths = [image_path(relative_path=si.item.image) for si in StudyItem.objects.filter(study=study)
                  .select_related("item").order_by("item_id")]
    for path in test_paths:  # same page-cache state for both sides
        path.read_bytes()
    e2e, bare = [], []
    loaded: dict = {}
    for repeat in range(args.repeats):
        shutil.rmtree(tmp / "cache", ignore_errors=True)
        name = f"{model_run_default_name(spec=spec)} bench {repeat}"
        # A speed measurement: its Pets items may be house training images, so the fairness check is waived.
        run = model_run_create(study=study, spec=spec, name=name, fewshot_methods=args.fewshot.split(","),
                               device=args.device, allow_trained_items=True)
        while ModelRun.objects.values_list("status", flat=True).get(pk=run.pk) not in ("done", "failed"):
            time.sleep(0.2)
        run.refresh_from_db()
        if run.status != "done":
            raise SystemExit(f"run failed: {run.error}")
        e2e.append((run.finished_at - run.created_at).total_seconds())
        bare.append(bare_pipeline(study=study, spec=spec, device=args.device, methods=args.fewshot.split(","),
                                  paths=test_paths, loaded=loaded, num_workers=args.num_workers,
                                  ShotExample=ShotExample, image_path=image_path,
                                  clipmodel=clipmodel, torch=torch))
        print(f"repeat {repeat}: end-to-end {n_items / e2e[-1]:7.1f} items/s ({e2e[-1]:.2f} s), "
              f"bare {n_items / bare[-1]:7.1f} items/s ({bare[-1]:.2f} s), ratio {bare[-1] / e2e[-1]:.2f}")
    summary = {"items": n_items, "chunk_size": args.chunk_size, "device": run.device, "dtype": run.dtype,
               "model": run.fingerprint,
               "cold": {"e2e_items_s": round(n_items / e2e[0], 1), "bare_items_s": round(n_items / bare[0], 1),
                        "ratio": round(bare[0] / e2e[0], 3)}}
    if len(e2e) > 1:
        # A shared machine is noisy: the median shows the typical case, the best of each side the capacity.
        for label, pick in (("warm_median", statistics.median), ("warm_best", min)):
            we, wb = pick(e2e[1:]), pick(bare[1:])
            summary[label] = {"e2e_items_s": round(n_items / we, 1), "bare_items_s": round(n_items / wb, 1),
                              "ratio": round(wb / we, 3)}
    summary["load_avg_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(summary))
    return 0


def bare_pipeline(*, study, spec, device, methods, paths, loaded, num_workers, ShotExample, image_path, clipmodel,
                  torch) -> float:
    """The same work with clipmodel alone, in this process: no queue, no database writes, no cache."""
    labels = list(study.dataset.classes.order_by("index"))
    shots = {
        n: list(ShotExample.objects.filter(condition__study=study, condition__shots=n).select_related("item", "label")
                .order_by("label__index", "rank"))
        for n in (1, 2)
    }
    run_templates = clipmodel.prompt_defaults([label.name for label in labels])[1]
    start = time.perf_counter()
    clip = loaded.get("clip")
    if clip is None:
        kwargs = {"checkpoint": spec.checkpoint} if spec.checkpoint else {"name": spec.model_name,
                                                                           "pretrained": spec.pretrained}
        if spec.checkpoint and not spec.is_house_model:
            kwargs["name"] = spec.model_name
        clip = loaded["clip"] = clipmodel.load_clip(device=device, **kwargs)
    stages = {"load": time.perf_counter() - start}
    text = clipmodel.zero_shot_weights(clip=clip, classnames=[label.prompt_name for label in labels],
                                       templates=run_templates)
    stages["text"] = time.perf_counter() - start
    # The one-shot examples are the first of each class's two (as the worker knows): encode each image once.
    two_shot = clipmodel.encode_images(clip=clip, images=[image_path(relative_path=s.item.image) for s in shots[2]],
                                       num_workers=num_workers)
    row = {s.item_id: i for i, s in enumerate(shots[2])}
    classifiers = []
    for n in (1, 2):
        feats = two_shot[[row[s.item_id] for s in shots[n]]]
        classifiers += [clipmodel.fit_few_shot(
            method=method, shot_features=feats, shot_labels=torch.tensor([s.label.index for s in shots[n]]),
            num_classes=len(labels), text_weights=text, logit_scale=clip.logit_scale) for method in methods]
    stages["shots"] = time.perf_counter() - start
    features = clipmodel.encode_images(clip=clip, images=paths, num_workers=num_workers)
    stages["encode"] = time.perf_counter() - start
    probs = [clipmodel.zero_shot_probs(image_features=features, text_weights=text, logit_scale=clip.logit_scale)]
    probs += [c.predict_proba(features) for c in classifiers]
    [p.argmax(dim=1).tolist() for p in probs]
    if os.environ.get("BENCH_VERBOSE"):
        print("  bare stages (cumulative s):", {k: round(v, 2) for k, v in stages.items()})
    return time.perf_counter() - start


def random_house_checkpoint(path: Path) -> Path:
    """The house architecture with random weights, saved like a trained house model (speed is the same)."""
    import open_clip
    import torch

    import clipmodel
    from clipmodel.loading import write_checkpoint

    torch.manual_seed(0)
    name = clipmodel.HOUSE_MODEL_NAME
    return write_checkpoint(path=path, model=open_clip.create_model(name), model_name=name,
                            model_cfg=open_clip.get_model_config(name))


if __name__ == "__main__":
    raise SystemExit(main())
