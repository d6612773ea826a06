"""The analyses beyond the paper on simulated studies: report time at the app's study size, coverage of the new
intervals against known population values, and the planner against studies of the sizes it recommends.

    .venv/bin/python benchmarks/bench_beyond.py [--studies 100] [--resamples 1000] [--skip-timing]
        [--skip-coverage] [--skip-planning]

Timing: a study of the app's default size (37 classes x 10 items, k = 5 answers per item and condition, 20 trials
per person and condition, three conditions, one model with probability vectors): the whole report in memory
(compute_report) with and without the analyses beyond the paper.

Coverage (tests/simulated_studies.py's known values, 37 classes x 10 items, 60 people, k = 5): the model's
accuracy at the humans' coverage (risk-coverage, micro) and the cross-entropy of the model's probabilities
against the soft labels; and rho = 0 for a model blind to difficulty (items and classes).

Planning: the default design (the paper's Table 2 as expectations) planned for a target half-width, then
``--studies``/5 fresh studies of the recommended size measured with the report's bootstrap; the power row
checked by the share of studies whose CI excludes 0; and the live projection to the full design from a third
and from half of its participants.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluator.report import (  # noqa: E402
    ConditionPlan,
    ReportOptions,
    StudyDesign,
    alignment,
    bootstrap,
    bootstrap_table2,
    compute_report,
    differences_table,
    encode,
    live_precision,
    plan_halfwidths,
    plan_study,
    prepare_trials,
    risk_coverage,
    validate_probabilities,
)
from evaluator.report.simulate import simulate_study  # noqa: E402
from tests.simulated_studies import (  # noqa: E402
    Population,
    model_cross_entropy_truth,
    model_selective_accuracy_truth,
)


def timing(resamples: int) -> None:
    design = StudyDesign()
    trials, vectors = [], []
    for c, plan in enumerate(design.conditions):
        study = simulate_study(design.population(plan), n_participants=design.capacity, items_per_class=10, k=5,
                               per_person=20, seed=c, condition=plan.condition)
        trials.append(study.trials())
        vectors.append(study.probabilities())
    trials, vectors = pd.concat(trials, ignore_index=True), pd.concat(vectors, ignore_index=True)
    print(f"\nreport time, app-size study: {len(trials):,} trials, {trials['subject'].nunique()} subjects, "
          f"{len(vectors):,} probability rows, {resamples} resamples")
    for beyond in (False, True):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            compute_report(trials, options=ReportOptions(bootstrap=resamples, beyond_paper=beyond),
                           probabilities=vectors if beyond else None)
            times.append(time.perf_counter() - t0)
        print(f"  compute_report, beyond_paper={beyond}: best {min(times):.2f} s, median {np.median(times):.2f} s")


def coverage(studies: int, resamples: int) -> None:
    population = Population()
    human_coverage = 1 - population.expected_idk_rate()
    truth_rc = model_selective_accuracy_truth(population, human_coverage) * 100
    truth_ce = model_cross_entropy_truth(population)
    blind = Population(model_coupling=0.0)
    hits = {"risk-coverage": 0, "cross-entropy": 0, "rho items (blind)": 0, "rho classes (blind)": 0}
    values = {k: [] for k in hits}
    widths = {k: [] for k in hits}
    t0 = time.perf_counter()
    for seed in range(studies):
        study = simulate_study(population, n_participants=60, items_per_class=10, k=5, seed=40_000 + seed)
        enc = encode(prepare_trials(study.trials()))
        summary, _ = risk_coverage(enc, average="micro", n_resamples=resamples, seed=seed)
        row = summary.set_index("quantity").loc["model_accuracy_at_human_coverage"]
        _count(hits, values, widths, "risk-coverage", row, truth_rc)
        table = alignment(enc, probabilities=validate_probabilities(study.probabilities(), enc), n_resamples=resamples,
                          seed=seed).set_index("quantity")
        _count(hits, values, widths, "cross-entropy", table.loc["cross_entropy"], truth_ce)
        blind_study = simulate_study(blind, n_participants=60, items_per_class=10, k=5, seed=50_000 + seed)
        table = alignment(blind_study.trials(), n_resamples=resamples, seed=seed).set_index("quantity")
        _count(hits, values, widths, "rho items (blind)", table.loc["spearman_items"], 0.0)
        _count(hits, values, widths, "rho classes (blind)", table.loc["spearman_classes"], 0.0)
    print(f"\ncoverage of 95% intervals, {studies} studies (37 classes x 10 items, 60 people, k = 5), {resamples} "
          f"resamples, {time.perf_counter() - t0:.0f} s")
    for name, truth in (("risk-coverage", truth_rc), ("cross-entropy", truth_ce), ("rho items (blind)", 0.0),
                        ("rho classes (blind)", 0.0)):
        v = np.array(values[name])
        print(f"  {name:<22} truth {truth:8.3f}  mean estimate {v.mean():8.3f} (sd {v.std():.3f})  coverage "
              f"{hits[name] / studies * 100:5.1f}%  mean width {np.mean(widths[name]):.3f}  true spread "
              f"{3.92 * v.std():.3f}")


def _count(hits, values, widths, name, row, truth) -> None:
    values[name].append(row["estimate"])
    widths[name].append(row["ci_high"] - row["ci_low"])
    hits[name] += row["ci_low"] <= truth <= row["ci_high"]


def planning(studies: int, resamples: int) -> None:
    design = StudyDesign()
    t0 = time.perf_counter()
    curve = plan_halfwidths(design, n_studies=10, n_resamples=300, seed=0)
    took = time.perf_counter() - t0
    print(f"\nplanning: default design ({design.n_items} items, k = {design.k}, {design.trials_per_person} trials per "
          f"person, capacity {design.capacity} per condition, {len(design.conditions)} conditions), "
          f"{curve['n_participants'].nunique()} sizes x 10 studies x 300 resamples: {took:.1f} s")
    plan = plan_study(design, target_halfwidth=5.0, halfwidths=curve)
    n_check = max(4, studies // 5)
    print(f"  target half-width 5 points; measured on {n_check} fresh studies of the recommended size:")
    for row in plan[plan["subject_kind"] == "human"].itertuples():
        if math.isnan(row.participants_per_condition):
            print(f"  {row.condition:<10} {row.metric:<26} unreachable (at capacity {row.halfwidth_at_capacity:.2f})")
            continue
        n = int(row.participants_per_condition)
        got = _measure(design, row.condition, n, n_check, resamples)[0][row.metric]
        print(f"  {row.condition:<10} {row.metric:<26} N = {n:4d}: measured {got:.2f} ({(got / 5 - 1) * 100:+.1f}%)")
    # Power: a design whose model is expected 10 points above the people.
    power_design = StudyDesign(conditions=(ConditionPlan("zero-shot", accuracy=60, idk_rate=10, model_accuracy=70),))
    power_curve = plan_halfwidths(power_design, n_studies=10, n_resamples=300, seed=1)
    row = plan_study(power_design, difference=10, halfwidths=power_curve).set_index("subject_kind").loc["difference"]
    n = int(row["participants_per_condition"])
    _, diffs = _measure(power_design, "zero-shot", n, studies, resamples)
    detected = np.mean([d["ci_high"] < 0 for d in diffs])
    print(f"  power: a 10-point human - model difference, N = {n}: CI excluded 0 in {detected * 100:.0f}% of {studies} "
          f"studies (planned 80%)")
    # Live: projected half-width at capacity from a third and from half of the participants.
    measured_full, _ = _measure(design, "one-shot", design.capacity, n_check, resamples)
    for share in (3, 2):
        now = design.capacity // share
        projected = []
        for s in range(n_check):
            plan_c = design.conditions[1]
            study = simulate_study(design.population(plan_c), n_participants=now, items_per_class=10, k=5,
                                   per_person=20, seed=60_000 + s, condition=plan_c.condition)
            live = live_precision(study.trials(), items_per_class=10, k=5, trials_per_person=20, n_resamples=resamples,
                                  seed=s)
            projected.append(live[live["subject_kind"] == "human"].set_index("metric")["projected_halfwidth_at_capacity"])
        projected = pd.concat(projected, axis=1).mean(axis=1)
        cells = ", ".join(f"{m} {projected[m]:.2f} vs {measured_full[m]:.2f}" for m in projected.index)
        print(f"  live, one-shot, from {now} of {design.capacity} participants, projected vs measured at capacity: {cells}")


def _measure(design: StudyDesign, condition: str, n: int, studies: int, resamples: int):
    plan = next(c for c in design.conditions if c.condition == condition)
    population = design.population(plan)
    k = max(design.k, math.ceil(n * design.trials_per_person / design.n_items))
    widths, diffs = [], []
    for s in range(studies):
        study = simulate_study(population, n_participants=n, items_per_class=design.items_per_class, k=k,
                               per_person=design.trials_per_person, seed=70_000 + s, condition=condition)
        boot = bootstrap(study.trials(), n_resamples=resamples, seed=s)
        ci = bootstrap_table2(boot)
        ci = ci[ci["subject_kind"] == "human"].set_index("metric")
        widths.append((ci["ci_high"] - ci["ci_low"]) / 2)
        d = differences_table(boot)
        diffs.append(d[(d["comparison"] == "human - model") & (d["metric"] == "accuracy")].iloc[0])
    return pd.concat(widths, axis=1).mean(axis=1), diffs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--skip-coverage", action="store_true")
    parser.add_argument("--skip-planning", action="store_true")
    args = parser.parse_args()
    if not args.skip_timing:
        timing(args.resamples)
    if not args.skip_coverage:
        coverage(args.studies, args.resamples)
    if not args.skip_planning:
        planning(args.studies, args.resamples)


if __name__ == "__main__":
    main()
