"""Coverage of the report's 95% intervals, and recovery of error consistency, on simulated studies.

    .venv/bin/python benchmarks/bench_coverage.py [--studies 200] [--resamples 1000] [--k 5] [--recovery-seeds 20]

Each simulated study (tests/simulated_studies.py) draws new people and new items from one population
(37 classes x 10 items, 60 participants, k answers per item, errors driven by item difficulty, idk
answers) whose Table 2 values are known exactly (numerical integration). Coverage: the share of studies
whose 95% interval contains the population value, per metric and bootstrap unit (goal: >= 92% for the
default two-way unit, for accuracy and majority vote). Width: the mean interval width beside the true
spread of the estimate over the studies (3.92 x its standard deviation), to show how conservative an
interval is.

Recovery: error consistency of the sparse design against the full-overlap value of the same people
(every person answering every item), at k = 3, 5 and 10, over ``--recovery-seeds`` seeds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluator.report import bootstrap_table2, consistency_table, encode, prepare_trials  # noqa: E402
from evaluator.report.metrics import METRICS  # noqa: E402
from tests.simulated_studies import Population, full_overlap_consistency, simulate_study  # noqa: E402

UNITS = ("two-way", "items", "participants")


def coverage(population: Population, *, studies: int, resamples: int, k: int) -> None:
    truth = population.truth(k)
    model_truth = population.model_truth()
    hits = {u: np.zeros(len(METRICS) + 1) for u in UNITS}
    widths = {u: np.zeros(len(METRICS)) for u in UNITS}
    estimates = []
    t0 = time.perf_counter()
    for seed in range(studies):
        study = simulate_study(population, n_participants=60, items_per_class=10, k=k, seed=10_000 + seed)
        enc = encode(prepare_trials(study.trials()))
        for unit in UNITS:
            ci = bootstrap_table2(enc, n_resamples=resamples, resample=unit, seed=seed)
            human = ci[ci["subject_kind"] == "human"].set_index("metric")
            model = ci[(ci["subject_kind"] == "model")].set_index("metric").loc["accuracy"]
            low, high = human.loc[list(METRICS), "ci_low"] / 100, human.loc[list(METRICS), "ci_high"] / 100
            truths = np.array([truth[m] for m in METRICS])
            hits[unit][:-1] += (low.to_numpy() <= truths) & (truths <= high.to_numpy())
            hits[unit][-1] += model["ci_low"] / 100 <= model_truth <= model["ci_high"] / 100
            widths[unit] += (high - low).to_numpy()
            if unit == "two-way":
                estimates.append(human.loc[list(METRICS), "estimate"].to_numpy() / 100)
    spread = 3.92 * np.std(estimates, axis=0)
    print(f"\ncoverage of 95% intervals, {studies} studies (k = {k}, 60 people, 370 items), {resamples} resamples, "
          f"{time.perf_counter() - t0:.0f} s")
    print("population values: " + ", ".join(f"{m} {truth[m] * 100:.2f}" for m in METRICS)
          + f"; model accuracy {model_truth * 100:.2f}")
    print(f"{'unit':<14}" + "".join(f"{m:>26}" for m in METRICS) + f"{'model accuracy':>18}")
    for unit in UNITS:
        cells = "".join(f"{hits[unit][j] / studies * 100:>13.1f}% (w {widths[unit][j] / studies * 100:4.1f} pp)"
                        for j in range(len(METRICS)))
        print(f"{unit:<14}{cells}{hits[unit][-1] / studies * 100:>17.1f}%")
    print(f"{'true spread':<14}" + "".join(f"{'3.92 sd = ' + format(s * 100, '.1f') + ' pp':>26}" for s in spread))
    verdict = all(hits["two-way"][j] / studies >= 0.92 for j in (0, 1))
    print(f"two-way: accuracy and majority vote >= 92%: {'OK' if verdict else 'MISSED'}")


def recovery(population: Population, *, seeds: int) -> None:
    print(f"\nerror consistency: sparse estimate minus full-overlap value, {seeds} seeds per k (60 people)")
    print(f"{'k':>3} {'items':>6} {'idk':>8} {'kind':>12} {'mean':>8} {'sd':>7} {'max |err|':>10}")
    for k, per_class in ((3, 100), (5, 60), (10, 30)):
        errors = {(idk, kind): [] for idk in ("error", "dropped") for kind in ("human-human", "human-model")}
        for seed in range(seeds):
            study = simulate_study(population, n_participants=60, items_per_class=per_class, k=k, seed=20_000 + seed)
            table = consistency_table(study.trials())
            for idk in ("error", "dropped"):
                full = full_overlap_consistency(study, idk=idk)
                rows = table[table["idk"] == idk].set_index("pair_kind")["error_consistency"]
                errors[(idk, "human-human")].append(rows["human-human"] - full["human-human"])
                errors[(idk, "human-model")].append(rows["human-model:model"] - full["human-model"])
        for (idk, kind), e in errors.items():
            e = np.array(e)
            print(f"{k:>3} {population.n_classes * per_class:>6} {idk:>8} {kind:>12} {e.mean():>+8.3f} {e.std():>7.3f} "
                  f"{np.abs(e).max():>10.3f}")
    # The scenario: 370 items, k = 5 (most pairs share 1-3 items): new estimator vs the earlier one.
    full, new, old = [], [], []
    for seed in range(seeds):
        study = simulate_study(population, n_participants=60, items_per_class=10, k=5, seed=30_000 + seed)
        full.append(full_overlap_consistency(study)["human-human"])
        table = consistency_table(study.trials())
        new.append(table[(table["idk"] == "error") & (table["pair_kind"] == "human-human")]["error_consistency"].iloc[0])
        old.append(_naive(study))
    print(f"370 items, k = 5, human-human, {seeds} seeds: full overlap {np.mean(full):.3f}, this estimator "
          f"{np.mean(new):.3f} (mean error {np.mean(np.subtract(new, full)):+.3f}, max |error| "
          f"{np.max(np.abs(np.subtract(new, full))):.3f}), earlier plain mean of pair kappas {np.mean(old):.3f}")


def _naive(study) -> float:
    """The earlier definition: plain mean over pairs of kappa on their common items (p on those items)."""
    right = study.full == study.item_class[None, :]
    mask = study.sparse_mask
    a_idx, b_idx = np.triu_indices(len(right), k=1)
    values = []
    for a, b in zip(a_idx, b_idx, strict=True):
        common = mask[a] & mask[b]
        if common.any():
            x, y = right[a][common], right[b][common]
            p1, p2 = x.mean(), y.mean()
            c = p1 * p2 + (1 - p1) * (1 - p2)
            if c < 1:
                values.append(((x == y).mean() - c) / (1 - c))
    return float(np.mean(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--recovery-seeds", type=int, default=20)
    args = parser.parse_args()
    population = Population()
    if args.recovery_seeds:
        recovery(population, seeds=args.recovery_seeds)
    if args.studies:
        coverage(population, studies=args.studies, resamples=args.resamples, k=args.k)


if __name__ == "__main__":
    main()
