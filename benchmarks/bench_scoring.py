"""Items/s of a whole scoring run (Celery + a real worker + DB writes) vs the bare clipmodel pipeline, per model.

Both sides score the same test images of a Pets study in zero-, one- and two-shot with the same few-shot
subjects (default both of the run's: linear probe and zero-shot prior): load the model, build the text weights,
encode the shot images once and fit every few-shot classifier, encode the test images once, classify them with
every classifier. The end-to-end side is timed from the run's creation to its `finished_at` (database
timestamps); it adds the queue, the chunk claims, reading and checking each image file, the feature cache and
writing every prediction. "cold" = the worker has not loaded the model yet; "warm" = the later repeats (model
loaded in both). The feature cache is emptied before every end-to-end repeat, so every image is really encoded.
The two sides alternate, so both see the same machine load; CPU seconds (the worker's, and the bare side's) are
reported too, as they depend less on what else runs. Goal: end-to-end >= 0.9x bare.

    .venv/bin/python benchmarks/bench_scoring.py                 # house model and ViT-B-32 (random weights), CPU
    .venv/bin/python benchmarks/bench_scoring.py --models house-vit-64 --repeats 9 --chunk-size 128
    .venv/bin/python benchmarks/bench_scoring.py --models ViT-B-32 ViT-L-14 --device cuda   # GPU: bf16 autocast

A model name gets random weights saved as a clipmodel checkpoint (scoring needs one reproducible set of weights;
speed does not depend on their values), except house-vit-64, which uses the trained house model when it is
cached. Uses a private Redis (redis-server on a free port), SQLite database, media root and cache, all in a
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

from tests.processes import RedisServer, wait_for  # noqa: E402

HOUSE = "house-vit-64"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "oxford_pets")
    p.add_argument("--per-class", type=int, default=8, help="test images per breed (37 breeds)")
    p.add_argument("--chunk-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--models", nargs="+", default=[HOUSE, "ViT-B-32"],
                   help="open_clip names (random weights; house-vit-64: the trained house model if cached)")
    p.add_argument("--checkpoint", default="", help="score this checkpoint instead of --models")
    p.add_argument("--device", default="auto")
    p.add_argument("--fewshot", default="linear-probe,zero-shot-prior",
                   help="comma-separated few-shot methods, each scored in the one- and two-shot conditions")
    p.add_argument("--num-workers", type=int, default=None,
                   help="bare side's DataLoader workers (default: 0 on CPU, where decoding in-process was faster "
                        "than clipmodel's default of 1 worker on 2 cores; clipmodel's default on GPU)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads on both sides (OMP_NUM_THREADS; default: torch's choice). 1 makes the CPU "
                        "seconds a steadier measure on a busy machine: idle threads spinning for work inflate them")
    p.add_argument("--json", type=Path, help="also write the results here")
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


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    args = parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-scoring-"))
    redis = RedisServer(tmp / "redis").start()
    env = {
        "VAR_DIR": str(tmp / "var"),
        "DATABASE_URL": f"sqlite:///{tmp / 'bench.sqlite3'}",
        "MEDIA_ROOT": str(tmp / "media"),
        "HUMANCLIP_CACHE": str(tmp / "cache"),
        "REDIS_URL": redis.url,
        "SCORING_CHUNK_SIZE": str(args.chunk_size),
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DB_CONN_MAX_AGE": "0",
        "PYTHONUNBUFFERED": "1",
        **({"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)} if args.threads else {}),
    }
    os.environ.update(env)  # before torch is imported, here and in the worker
    worker: subprocess.Popen | None = None
    try:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        study = make_study(args, tmp=tmp)
        log = (tmp / "worker.log").open("w")
        worker = subprocess.Popen(
            [str(Path(sys.executable).with_name("celery")), "-A", "config", "worker", "-Q", "scoring", "-c", "1",
             "--pool", "solo", "-n", "bench@%h", "--without-gossip", "--without-mingle", "-l", "info"],
            cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
        from evaluator.celery_app import app

        wait_for(lambda: app.control.ping(timeout=0.5) or worker.poll() is not None, timeout=120,
                 what=f"the worker (see {tmp / 'worker.log'})")
        checkpoints = [args.checkpoint] if args.checkpoint else [model_checkpoint(name, tmp=tmp, data=args.data)
                                                                 for name in args.models]
        results = [bench_model(args, study=study, checkpoint=c, worker_pid=worker.pid, tmp=tmp) for c in checkpoints]
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()
        redis.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def make_study(args, *, tmp: Path):
    from studyapp.models import Dataset
    from studyapp.services.datasets import dataset_import
    from studyapp.services.studies import study_create, study_open

    subset = write_subset(data=args.data, per_class=args.per_class, out=tmp / "subset.csv")
    dataset = dataset_import(name="Oxford-IIIT Pet (bench)", path=subset, fmt=Dataset.Format.CSV,
                             images_root=args.data / "images").dataset
    return study_open(study=study_create(dataset=dataset, title="bench", seed=1))


def model_checkpoint(name: str, *, tmp: Path, data: Path) -> str:
    """The trained house model when it is cached, else ``name`` with random weights saved as a checkpoint."""
    if name == HOUSE:
        from clipmodel.house import demo_exclusions, house_model_path

        trained = house_model_path(data_root=data.parent, cache_dir=Path.home() / ".cache" / "humanclip",
                                   exclude_sha256=demo_exclusions(data_root=data.parent))
        if trained.is_file():
            return str(trained)
    return str(random_checkpoint(name, tmp / f"{name}-random.pt"))


def random_checkpoint(name: str, path: Path) -> Path:
    """``name``'s architecture with random weights, saved as a clipmodel checkpoint (it carries its config)."""
    import open_clip
    import torch

    from clipmodel.loading import write_checkpoint

    torch.manual_seed(0)
    return write_checkpoint(path=path, model=open_clip.create_model(name), model_name=name,
                            model_cfg=open_clip.get_model_config(name))


def bench_model(args, *, study, checkpoint: str, worker_pid: int, tmp: Path) -> dict:
    import torch

    from evaluator.models import ModelRun
    from evaluator.services.runs import model_run_create
    from evaluator.services.specs import model_run_default_name, model_spec_resolve
    from studyapp.models import StudyItem
    from studyapp.services.images import image_path

    spec = model_spec_resolve(checkpoint=checkpoint)
    methods = args.fewshot.split(",")
    num_workers = args.num_workers
    if num_workers is None:
        num_workers = None if torch.cuda.is_available() and args.device != "cpu" else 0
    test_paths = [image_path(relative_path=si.item.image) for si in StudyItem.objects.filter(study=study)
                  .select_related("item").order_by("item_id")]
    for path in test_paths:  # same page-cache state for both sides
        path.read_bytes()
    n_items = len(test_paths)
    print(f"{spec.model_name}: {n_items} test items x 3 conditions ({', '.join(methods)} in one-/two-shot), "
          f"chunk size {args.chunk_size}, {Path(checkpoint).name}, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs", flush=True)
    e2e, bare, e2e_cpu, bare_cpu, loaded = [], [], [], [], {}
    for repeat in range(args.repeats):
        shutil.rmtree(tmp / "cache", ignore_errors=True)
        name = f"{model_run_default_name(spec=spec)} bench {repeat}"
        cpu_before = cpu_seconds(worker_pid)
        # A speed measurement: its Pets items may be house training images, so the fairness check is waived.
        run = model_run_create(study=study, spec=spec, name=name, fewshot_methods=methods, device=args.device,
                               allow_trained_items=True)
        # The run's own timestamps time it; polling rarely keeps this process off the worker's CPUs meanwhile.
        while ModelRun.objects.values_list("status", flat=True).get(pk=run.pk) not in ("done", "failed"):
            time.sleep(0.5)
        e2e_cpu.append(cpu_seconds(worker_pid) - cpu_before)
        run.refresh_from_db()
        if run.status != "done":
            raise SystemExit(f"run failed: {run.error}")
        e2e.append((run.finished_at - run.created_at).total_seconds())
        cpu_before = time.process_time()
        bare.append(bare_pipeline(study=study, run=run, spec=spec, device=args.device, methods=methods,
                                  paths=test_paths, loaded=loaded, num_workers=num_workers))
        bare_cpu.append(time.process_time() - cpu_before)
        print(f"  repeat {repeat}: end-to-end {n_items / e2e[-1]:7.1f} items/s ({e2e[-1]:.2f} s, {e2e_cpu[-1]:.2f} CPU s), "
              f"bare {n_items / bare[-1]:7.1f} items/s ({bare[-1]:.2f} s, {bare_cpu[-1]:.2f} CPU s), "
              f"ratio {bare[-1] / e2e[-1]:.2f}", flush=True)
    result = {"model": spec.model_name, "checkpoint": checkpoint, "fingerprint": run.fingerprint, "items": n_items,
              "chunk_size": args.chunk_size, "device": run.device, "dtype": run.dtype, "repeats": args.repeats,
              "cold": {"e2e_items_s": round(n_items / e2e[0], 1), "bare_items_s": round(n_items / bare[0], 1),
                       "ratio": round(bare[0] / e2e[0], 3)}}
    if len(e2e) > 1:
        warm = slice(1, None)
        # A shared machine is noisy: the median shows the typical case, the best of each side the capacity.
        for label, pick in (("warm_median", statistics.median), ("warm_best", min)):
            we, wb = pick(e2e[warm]), pick(bare[warm])
            result[label] = {"e2e_items_s": round(n_items / we, 1), "bare_items_s": round(n_items / wb, 1),
                             "ratio": round(wb / we, 3)}
        result["warm_cpu"] = {"e2e_cpu_s": round(statistics.median(e2e_cpu[warm]), 3),
                              "bare_cpu_s": round(statistics.median(bare_cpu[warm]), 3),
                              "ratio": round(statistics.median(bare_cpu[warm]) / statistics.median(e2e_cpu[warm]), 3)}
    result["load_avg_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result), flush=True)
    return result


def bare_pipeline(*, study, run, spec, device, methods, paths, loaded, num_workers) -> float:
    """The same model work with clipmodel alone, in this process: no queue, no file check, no cache, no database.

    Same prompts (the run's), the same shots, both few-shot subjects per shot condition, each image encoded once.
    """
    import torch

    import clipmodel
    from clipmodel.fewshot import default_params
    from studyapp.models import ShotExample
    from studyapp.services.images import image_path

    labels = list(study.dataset.classes.order_by("index"))
    shots = {
        n: list(ShotExample.objects.filter(condition__study=study, condition__shots=n).select_related("item", "label")
                .order_by("label__index", "rank"))
        for n in (1, 2)
    }
    start = time.perf_counter()
    clip = loaded.get("clip")
    if clip is None:  # as the worker loads it: the checkpoint carries its config; bf16 autocast on CUDA
        clip = loaded["clip"] = clipmodel.load_clip(checkpoint=spec.checkpoint, device=device)
    stages = {"load": time.perf_counter() - start}
    text = clipmodel.prompt_weights(clip=clip, prompts=run.prompts)
    stages["text"] = time.perf_counter() - start
    # The one-shot examples are the first of each class's two (as the worker knows): encode each image once.
    two_shot = clipmodel.encode_images(clip=clip, images=[image_path(relative_path=s.item.image) for s in shots[2]],
                                       num_workers=num_workers)
    row = {s.item_id: i for i, s in enumerate(shots[2])}
    classifiers = []
    for n in (1, 2):
        features = two_shot[[row[s.item_id] for s in shots[n]]]
        for method in methods:
            params = default_params(method)
            classifiers.append(clipmodel.fit_few_shot(
                method=method, shot_features=features, shot_labels=torch.tensor([s.label.index for s in shots[n]]),
                num_classes=len(labels), text_weights=text, logit_scale=clip.logit_scale, C=params.get("C"),
                prior_lambda=params.get("lambda")))
    stages["shots"] = time.perf_counter() - start
    features = clipmodel.encode_images(clip=clip, images=paths, num_workers=num_workers)
    stages["encode"] = time.perf_counter() - start
    probs = [clipmodel.zero_shot_probs(image_features=features, text_weights=text, logit_scale=clip.logit_scale)]
    probs += [c.predict_proba(features) for c in classifiers]
    [p.argmax(dim=1).tolist() for p in probs]
    if os.environ.get("BENCH_VERBOSE"):
        print("    bare stages (cumulative s):", {k: round(v, 2) for k, v in stages.items()})
    return time.perf_counter() - start


def print_table(results: list[dict]) -> None:
    print("\n| model | device, dtype | cold e2e / bare (items/s) | ratio | warm median e2e / bare | ratio "
          "| warm best ratio | warm CPU s e2e / bare | CPU ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        cold, median, best, cpu = r["cold"], r.get("warm_median", {}), r.get("warm_best", {}), r.get("warm_cpu", {})
        print(f"| {r['model']} | {r['device']}, {r['dtype']} | {cold['e2e_items_s']} / {cold['bare_items_s']} | "
              f"{cold['ratio']:.2f} | {median.get('e2e_items_s', '-')} / {median.get('bare_items_s', '-')} | "
              f"**{median.get('ratio', 0):.2f}** | {best.get('ratio', 0):.2f} | {cpu.get('e2e_cpu_s', '-')} / "
              f"{cpu.get('bare_cpu_s', '-')} | {cpu.get('ratio', 0):.2f} |")


if __name__ == "__main__":
    raise SystemExit(main())
