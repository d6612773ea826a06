"""Risk-coverage ("I don't know" as abstention): oracle and uninformative confidences, a plain-loop curve, human
points equal to Table 2, and the known selective accuracy of a simulated model whose confidence tracks its
probability of being right."""

import math
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest

from evaluator.report import encode, prepare_trials, table2
from evaluator.report.abstention import risk_coverage
from tests.simulated_studies import Population, model_selective_accuracy_truth, simulate_study


def with_confidence(trials: pd.DataFrame, confidence) -> pd.DataFrame:
    """The model rows get ``confidence(is_right, rng)`` as p_response (p_target is dropped: not needed here)."""
    out = trials.drop(columns=[c for c in ("p_target", "p_response") if c in trials.columns]).copy()
    model = out["subject_kind"] == "model"
    right = (out.loc[model, "response"] == out.loc[model, "target"]).to_numpy()
    out["p_response"] = np.nan
    out.loc[model, "p_response"] = confidence(right, np.random.default_rng(0))
    return out


def loop_curve(rows: pd.DataFrame, average: str) -> list[tuple[int, float, float]]:
    """(kept, coverage %, accuracy %) at every distinct threshold, by plain loops over the model's answers."""
    n_per_class = defaultdict(int)
    for r in rows.itertuples():
        n_per_class[r.target] += 1
    guesses = rows[rows["response"] != "idk"]
    points = []
    for t in sorted(set(guesses["p_response"]), reverse=True):
        kept = [r for r in guesses.itertuples() if r.p_response >= t]
        per_class = defaultdict(lambda: [0, 0])
        for r in kept:
            per_class[r.target][0] += 1
            per_class[r.target][1] += r.response == r.target
        if average == "micro":
            coverage = len(kept) / len(rows)
            accuracy = sum(c[1] for c in per_class.values()) / len(kept)
        else:
            coverage = sum(per_class[c][0] / n if c in per_class else 0.0 for c, n in n_per_class.items()) / len(n_per_class)
            accuracy = sum(k[1] / k[0] for k in per_class.values()) / len(per_class)
        points.append((len(kept), coverage * 100, accuracy * 100))
    return points


def test_a_model_that_abstains_exactly_where_it_is_wrong_has_a_perfect_risk_coverage_curve():
    # People who often say idk (coverage about 55 %), a model right on about 84 % of the items whose confidence is
    # higher on every item it gets right than on any item it gets wrong.
    population = Population(n_classes=12, base_logit=0.0, idk_share=0.9)
    study = simulate_study(population, n_participants=40, items_per_class=10, k=5, seed=2)
    trials = with_confidence(study.trials(), lambda right, rng: np.where(right, 0.9, 0.3) + 0.05 * rng.random(len(right)))
    summary, curve = risk_coverage(trials, average="micro", n_resamples=300, seed=1)
    model = trials[trials["subject_kind"] == "model"]
    n_right = int((model["response"] == model["target"]).sum())
    assert 0 < n_right < len(model)
    kept_right = curve[curve["n_kept"] <= n_right]
    assert (kept_right["accuracy"] == 100).all()
    # Beyond the last right answer only wrong ones are added: the oracle curve right / kept.
    rest = curve[curve["n_kept"] > n_right]
    assert rest["accuracy"].to_numpy() == pytest.approx(100 * n_right / rest["n_kept"].to_numpy())
    at = summary.set_index("quantity").loc["model_accuracy_at_human_coverage"]
    human = summary.set_index("quantity").loc["human_coverage"]
    assert human["ci_high"] < 100 * n_right / len(model)  # the humans keep fewer items than the model gets right
    assert (at["estimate"], at["ci_low"], at["ci_high"]) == (100, 100, 100)
    macro, macro_curve = risk_coverage(trials, n_resamples=0)
    assert (macro_curve.loc[macro_curve["n_kept"] <= n_right, "accuracy"] == 100).all()


@pytest.mark.parametrize("average", ["macro", "micro"])
def test_the_curve_equals_a_plain_loop_over_thresholds_with_ties_and_an_abstaining_answer(average):
    rows = pd.DataFrame({
        "item": [f"i{j}" for j in range(9)],
        "target": ["A", "A", "A", "A", "B", "B", "C", "C", "C"],
        "response": ["A", "B", "A", "idk", "B", "A", "C", "C", "A"],
        "p_response": [0.9, 0.8, 0.6, np.nan, 0.8, 0.55, 0.6, 0.95, 0.4],
    })
    trials = rows.assign(subject="m", subject_kind="model", condition="zero-shot", rt_ms=np.nan)
    _, curve = risk_coverage(trials, average=average, n_resamples=0)
    expected = loop_curve(rows, average)
    assert list(curve["n_kept"]) == [k for k, _, _ in expected]  # ties (0.8, 0.6) form one threshold each
    assert curve["coverage"].to_numpy() == pytest.approx([c for _, c, _ in expected], abs=1e-9)
    assert curve["accuracy"].to_numpy() == pytest.approx([a for _, _, a in expected], abs=1e-9)
    assert curve["coverage"].iloc[-1] < 100  # the model's own idk answer is never kept


@pytest.mark.parametrize("average", ["macro", "micro"])
def test_the_humans_points_are_table2_accuracy_on_guesses_and_the_share_of_non_idk_answers(study, average):
    summary, _ = risk_coverage(study, average=average, n_resamples=50)
    kept = prepare_trials(study)
    t2 = table2(kept, average=average).set_index(["subject_kind", "condition"])
    for condition, part in summary[summary["subject"] == "humans"].groupby("condition"):
        values = part.set_index("quantity")["estimate"]
        assert values["human_accuracy_on_guesses"] == pytest.approx(t2.loc[("human", condition),
                                                                           "accuracy_on_guesses"], abs=1e-9)
        humans = kept[(kept["subject_kind"] == "human") & (kept["condition"] == condition)]
        guessed = humans["response"] != "idk"
        if average == "micro":
            expected = guessed.mean() * 100
        else:
            expected = guessed.groupby(humans["target"]).mean().mean() * 100
        assert values["human_coverage"] == pytest.approx(expected, abs=1e-9)


def test_the_fixture_reads_the_model_at_the_humans_coverage_between_two_thresholds(study):
    summary, curve = risk_coverage(study, n_resamples=0)
    one = summary[(summary["condition"] == "one-shot")].set_index(["subject", "quantity"])["estimate"]
    coverage = one[("humans", "human_coverage")]
    clip = curve[(curve["subject"] == "clip") & (curve["condition"] == "one-shot")]
    below, above = clip[clip["coverage"] < coverage].iloc[-1], clip[clip["coverage"] >= coverage].iloc[0]
    share = (coverage - below["coverage"]) / (above["coverage"] - below["coverage"])
    expected = below["accuracy"] + share * (above["accuracy"] - below["accuracy"])
    assert one[("clip", "model_accuracy_at_human_coverage")] == pytest.approx(expected, abs=1e-9)
    assert one[("clip", "model_minus_humans")] == pytest.approx(expected - one[("humans", "human_accuracy_on_guesses")])
    assert "abstainer" not in set(curve["subject"])  # no p_response: nothing to rank by
    assert not (summary["subject"] == "abstainer").any()


def test_a_confidence_unrelated_to_correctness_gives_a_flat_curve_on_average():
    population = Population(n_classes=12)
    gaps = []
    for seed in range(20):
        study = simulate_study(population, n_participants=30, items_per_class=20, k=3, seed=seed)
        trials = with_confidence(study.trials(), lambda right, rng: rng.random(len(right)))
        _, curve = risk_coverage(trials, average="micro", n_resamples=0)
        model = trials[trials["subject_kind"] == "model"]
        accuracy = (model["response"] == model["target"]).mean() * 100
        half = curve.iloc[(curve["coverage"] - 50).abs().argmin()]
        gaps.append(half["accuracy"] - accuracy)
    assert abs(np.mean(gaps)) < 1.5  # selective accuracy = accuracy when confidence carries no information


def test_the_models_accuracy_at_the_humans_coverage_recovers_the_known_selective_accuracy():
    """The simulated model's confidence rises with its probability of being right, so the population value at
    the humans' population coverage is E[s | s above its (1 - coverage) quantile]; CIs cover it."""
    population = Population(n_classes=12)
    human_coverage = 1 - population.expected_idk_rate()
    truth = model_selective_accuracy_truth(population, human_coverage) * 100
    estimates, hits, n = [], 0, 30
    for seed in range(n):
        study = simulate_study(population, n_participants=40, items_per_class=20, k=5, seed=100 + seed)
        summary, _ = risk_coverage(study.trials(), average="micro", n_resamples=300, seed=seed)
        row = summary.set_index("quantity").loc["model_accuracy_at_human_coverage"]
        estimates.append(row["estimate"])
        hits += row["ci_low"] <= truth <= row["ci_high"]
    assert np.mean(estimates) == pytest.approx(truth, abs=1.0)
    assert hits / n >= 0.85
    assert not math.isnan(truth)


def test_no_model_with_a_confidence_leaves_only_the_human_points():
    population = Population(n_classes=5)
    study = simulate_study(population, n_participants=10, items_per_class=4, k=3, seed=1)
    trials = study.trials().drop(columns=["p_target", "p_response"])
    summary, curve = risk_coverage(encode(prepare_trials(trials)), n_resamples=20)
    assert curve.empty and set(summary["subject"]) == {"humans"}
