"""Times of the study dashboard, its live precision, the probability table of study reports and planning.

A synthetic study in a throwaway SQLite database (nothing of var/ is touched): C classes x I items per class as test
items (image rows only, no files: nothing here opens an image), the three conditions, k answers per item and condition
from people answering `--trials` items each (right with probability 0.7, else idk or another class), and one finished
model run answering every item in zero-shot and with two few-shot methods in one- and two-shot (random probability
vectors whose top class is the answer). Then:

* the dashboard page through Django's test client (staff, warm): median of `--repeat` requests and its query count;
* the live precision (1,000 resamples, the report's) cold, then from the cache;
* `model_probability_table` (the report's second input) and the report with it (`compute_report`, 1,000 resamples);
* with `--plan`, the planning simulation of the study's design (10 studies x 300 resamples per size), as the task runs it.

    .venv/bin/python benchmarks/bench_dashboard.py                       # the app's default: 37 x 10 items, k 5, 20 trials
    .venv/bin/python benchmarks/bench_dashboard.py --items-per-class 100 --no-people   # probability table of all Pets
    .venv/bin/python benchmarks/bench_dashboard.py --items-per-class 5 --plan          # the demo's Pets design
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--classes", type=int, default=37)
    p.add_argument("--items-per-class", type=int, default=10)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--trials", type=int, default=20, help="test trials per person and condition")
    p.add_argument("--no-people", action="store_true", help="model answers only (for the probability table alone)")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--plan", action="store_true", help="also time the planning simulation of this design")
    return p.parse_args()


def setup(tmp: Path) -> None:
    os.environ.update({"VAR_DIR": str(tmp), "DATABASE_URL": f"sqlite:///{tmp / 'bench.sqlite3'}",
                       "MEDIA_ROOT": str(tmp / "media"), "DJANGO_SETTINGS_MODULE": "config.settings",
                       "HF_HUB_OFFLINE": "1", "ALLOWED_HOSTS": "testserver"})
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def build(args):
    import numpy as np
    from django.utils import timezone

    from evaluator.models import ModelPrediction, ModelRun
    from studyapp.models import Assignment, ClassLabel, Dataset, Item, Participant, Response
    from studyapp.services.studies import study_create, study_open

    rng = np.random.default_rng(0)
    dataset = Dataset.objects.create(name="bench", source_format="folder")
    labels = ClassLabel.objects.bulk_create([ClassLabel(dataset=dataset, index=i, name=f"class {i:02d}",
                                                        prompt_name=f"class {i:02d}") for i in range(args.classes)])
    items = []
    for split, per_class in (("test", args.items_per_class), ("train", 2)):
        for label in labels:
            for j in range(per_class):
                digest = f"{split}{label.index:04d}{j:06d}".ljust(64, "0")
                items.append(Item(dataset=dataset, content_hash=digest, image=f"{digest}.jpg", split=split,
                                  label=label, width=64, height=64, original_filename=f"{digest}.jpg"))
    Item.objects.bulk_create(items, batch_size=2000)
    study = study_open(study=study_create(dataset=dataset, title="bench", k_per_item=args.k,
                                          items_per_participant=args.trials))
    test_items = [si.item for si in study.study_items.select_related("item__label").order_by("item_id")]
    conditions = list(study.conditions.order_by("shots"))
    n_people = 0 if args.no_people else math.ceil(len(test_items) * args.k / args.trials)
    expires = timezone.now()
    for p in range(n_people):
        person = Participant.objects.create(study=study, consent="given", completed_at=expires)
        for condition in conditions:
            # Person p takes the p-th block of trials: every item gets exactly k answers over all people.
            turns = [p * args.trials + t for t in range(args.trials)]
            chosen = [test_items[turn % len(test_items)] for turn in turns]
            made = Assignment.objects.bulk_create([
                Assignment(participant=person, condition=condition, item=item, position=t,
                           slot=turn // len(test_items), status=Assignment.Status.ANSWERED, expires_at=expires)
                for t, (turn, item) in enumerate(zip(turns, chosen, strict=True))])
            draws = rng.random(len(made))
            Response.objects.bulk_create([
                Response(assignment=a, is_idk=d >= 0.7 and d < 0.8,
                         choice=None if 0.7 <= d < 0.8 else item.label if d < 0.7 else labels[(item.label.index + 1)
                                                                                             % args.classes],
                         rt_client_ms=900) for a, item, d in zip(made, chosen, draws, strict=True)])
    run = ModelRun.objects.create(study=study, name="bench model", status=ModelRun.Status.DONE,
                                  condition_shots=[0, 1, 2], fewshot_methods=["linear-probe", "zero-shot-prior"],
                                  fingerprint="bench", items_total=len(test_items) * 5)
    predictions = []
    for condition in conditions:
        for method in ([""] if condition.shots == 0 else run.fewshot_methods):
            probs = rng.dirichlet(np.full(args.classes, 0.3), size=len(test_items))
            for item, vector in zip(test_items, probs, strict=True):
                top = int(vector.argmax())
                predictions.append(ModelPrediction(run=run, condition=condition, item=item, method=method,
                                                   predicted=labels[top], probs=vector.round(8).tolist(),
                                                   p_target=float(vector.round(8)[item.label.index]),
                                                   p_predicted=float(vector.round(8)[top])))
    ModelPrediction.objects.bulk_create(predictions, batch_size=2000)
    return study, n_people


def timed(call, repeat: int) -> tuple[float, float, object]:
    times, value = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        value = call()
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times), value


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        setup(Path(tmp))
        from django.contrib.auth import get_user_model
        from django.core.cache import cache
        from django.db import connection
        from django.test import Client

        from evaluator.dashboard_precision import study_live_precision
        from evaluator.probability_table import model_probability_table
        from evaluator.report import ReportOptions, compute_report
        from evaluator.study_reports import study_report_meta, study_trials

        started = time.perf_counter()
        study, n_people = build(args)
        print(f"built: {args.classes} classes x {args.items_per_class} items, {n_people} people per condition, "
              f"k {args.k}, {args.trials} trials ({time.perf_counter() - started:.1f} s)")
        client = Client()
        client.force_login(get_user_model().objects.create_superuser("bench", "b@example.org", "x"))
        url = f"/studies/{study.code}/dashboard/"
        client.get(url)
        captured = []  # counted at the cursor (the request's reset_queries would empty a CaptureQueriesContext log)
        with connection.execute_wrapper(lambda execute, sql, *rest: captured.append(sql) or execute(sql, *rest)):
            response = client.get(url)
        assert response.status_code == 200, response.status_code
        best, median, _ = timed(lambda: client.get(url), args.repeat)
        print(f"dashboard page: {len(captured)} queries, {best * 1000:.0f} ms best / {median * 1000:.0f} ms median")
        trials = study_trials(study=study)
        print(f"trial table: {len(trials)} rows")
        if n_people:
            cache.clear()
            started = time.perf_counter()
            cold = study_live_precision(study=study)
            total = time.perf_counter() - started
            best, median, warm = timed(lambda: study_live_precision(study=study), args.repeat)
            print(f"live precision: cold {total:.2f} s (live_precision itself {cold.seconds:.2f} s, "
                  f"{cold.table.shape[0]} cells); cached {best * 1000:.1f} ms best / {median * 1000:.1f} ms median "
                  f"(cached: {warm.cached})")
            fragment = f"/studies/{study.code}/dashboard/precision"
            best, median, _ = timed(lambda: client.get(fragment), args.repeat)
            print(f"precision fragment from the cache: {best * 1000:.0f} ms best / {median * 1000:.0f} ms median")
        best, median, table = timed(lambda: model_probability_table(study=study), 3)
        print(f"model_probability_table: {len(table)} rows, {best:.2f} s best / {median:.2f} s median")
        if n_people:
            options = ReportOptions(static=False)
            meta = study_report_meta(study=study, trials=trials, options=options)
            started = time.perf_counter()
            result = compute_report(trials, meta=meta, options=options, probabilities=table)
            print(f"compute_report with it: {time.perf_counter() - started:.2f} s, "
                  f"{result.counts['n_probability_vectors']} vectors, protocol match "
                  f"{meta['protocol']['data_match']}")
        if args.plan:
            from evaluator.services.planning import study_design, study_plan_compute, study_plan_request

            plan = study_plan_request(study=study, design=study_design(study=study), send=False)
            started = time.perf_counter()
            outcome = study_plan_compute(plan_id=plan.pk, task_id="bench")
            print(f"planning ({outcome}): {len(plan.grid)} sizes {plan.grid}, {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
