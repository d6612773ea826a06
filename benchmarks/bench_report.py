"""Benchmark: Table 2 + 1,000 bootstrap resamples on ~1,000,000 synthetic trials.

    .venv/bin/python benchmarks/bench_report.py [--trials 1000000] [--resamples 1000] [--repeat 3]
        [--resample two-way|items|participants] [--consistency]

Design: 37 classes × 100 items = 3,700 items; 3 conditions; human answers spread evenly
over the items of a condition (1,000,000 / (3 × 3,700) ≈ 90 answers per item and condition,
from participants who each answer 500 items); ~15 % 'idk'; plus one model answering every
item in every condition. Goal: < 10 s on a 2-core machine, with the default (two-way) bootstrap.
``--consistency`` also times the error-consistency table with its bootstrap CIs (not part of the goal).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluator.report import bootstrap_table2, consistency_table, encode, prepare_trials, table2  # noqa: E402
from evaluator.report.trials import CONDITIONS  # noqa: E402


def synthetic_trials(n_trials: int = 1_000_000, *, n_classes: int = 37, items_per_class: int = 100,
                     items_per_participant: int = 500, idk_rate: float = 0.15, seed: int = 0) -> pd.DataFrame:
    """A trial table shaped like the study, generated with numpy only (no Python loop over trials)."""
    rng = np.random.default_rng(seed)
    n_items = n_classes * items_per_class
    classes = np.array([f"class_{c:02d}" for c in range(n_classes)], dtype=object)
    item_names = np.array([f"img_{i:05d}" for i in range(n_items)], dtype=object)
    item_class = np.repeat(np.arange(n_classes), items_per_class)
    per_condition = n_trials // len(CONDITIONS)
    parts = []
    for k, condition in enumerate(CONDITIONS):
        slot = np.arange(per_condition)
        item = slot % n_items  # every item gets the same number of answers
        participant = slot // items_per_participant
        accuracy = 0.55 + 0.1 * k  # zero-shot < one-shot < two-shot
        # Harder classes for higher class numbers, so per-class accuracies differ.
        p_right = np.clip(accuracy + 0.3 * (0.5 - item_class[item] / n_classes), 0.05, 0.95)
        u = rng.random(per_condition)
        wrong = (item_class[item] + rng.integers(1, n_classes, per_condition)) % n_classes
        answer = np.where(u < p_right, item_class[item], wrong).astype(object)
        answer = classes[answer.astype(np.int64)]
        answer[rng.random(per_condition) < idk_rate * (1 - 0.3 * k)] = "idk"
        parts.append(pd.DataFrame({
            "subject": np.char.add(f"h{k}_", participant.astype(str)).astype(object),
            "subject_kind": "human", "condition": condition, "item": item_names[item],
            "target": classes[item_class[item]], "response": answer,
            "rt_ms": rng.gamma(4.0, 400.0, per_condition),
        }))
        model_right = rng.random(n_items) < 0.93
        model_answer = np.where(model_right, item_class, (item_class + 1) % n_classes)
        p_target = np.clip(rng.normal(0.85, 0.1, n_items), 0, 1)
        parts.append(pd.DataFrame({
            "subject": "clip-vit-l14", "subject_kind": "model", "condition": condition, "item": item_names,
            "target": classes[item_class], "response": classes[model_answer], "rt_ms": np.nan,
            "p_target": p_target, "p_response": np.where(model_right, p_target, 1 - p_target),
        }))
    return pd.concat(parts, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1_000_000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--resample", default="two-way", choices=("two-way", "items", "participants"))
    parser.add_argument("--consistency", action="store_true")
    args = parser.parse_args()

    trials = synthetic_trials(args.trials)
    print(f"{len(trials):,} trials, {trials['item'].nunique():,} items, {trials['target'].nunique()} classes, "
          f"{trials['subject'].nunique():,} subjects; {os.cpu_count()} CPUs; numpy {np.__version__}, "
          f"pandas {pd.__version__}")
    totals = []
    for run in range(args.repeat):
        t0 = time.perf_counter()
        prepared = prepare_trials(trials)
        t1 = time.perf_counter()
        enc = encode(prepared)
        t2 = time.perf_counter()
        result = table2(enc)
        t3 = time.perf_counter()
        ci = bootstrap_table2(enc, n_resamples=args.resamples, resample=args.resample, seed=run)
        t4 = time.perf_counter()
        totals.append(t4 - t0)
        print(f"run {run + 1}: validate {t1 - t0:.2f} s, encode {t2 - t1:.2f} s, table2 {t3 - t2:.2f} s, "
              f"bootstrap ({args.resample}) x{args.resamples} {t4 - t3:.2f} s, total {t4 - t0:.2f} s")
    print(result.round(2).to_string(index=False))
    width = (ci["ci_high"] - ci["ci_low"]).round(2)
    print(f"CI width (pp): min {width.min():.2f}, max {width.max():.2f}")
    if args.consistency:
        t0 = time.perf_counter()
        table = consistency_table(enc, n_resamples=args.resamples, seed=0)
        print(f"consistency table with {args.resamples}-resample CIs: {time.perf_counter() - t0:.2f} s")
        print(table.round(3).to_string(index=False))
    best = min(totals)
    verdict = "OK" if best < 10 else "MISSED"
    print(f"best total {best:.2f} s (median {np.median(totals):.2f} s) — goal < 10 s: {verdict}")


if __name__ == "__main__":
    main()
