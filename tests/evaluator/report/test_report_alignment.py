"""Soft labels and difficulty alignment: hand values, the weighted rank correlation against the expanded sample,
and known population values on simulated studies (cross-entropy; rho = 0 for a model blind to difficulty)."""

import math

import numpy as np
import pandas as pd
import pytest

from evaluator.report import encode, prepare_trials, soft_labels, validate_probabilities
from evaluator.report.alignment import alignment, weighted_spearman
from tests.simulated_studies import Population, human_answer_distribution, model_cross_entropy_truth, simulate_study


def tiny_study():
    """Two classes, two items; four people on a1 (A, A, B, idk), two on b1 (B, B); a model in zero-shot."""
    rows = [("h1", "a1", "A", "A"), ("h2", "a1", "A", "A"), ("h3", "a1", "A", "B"), ("h4", "a1", "A", "idk"),
            ("h1", "b1", "B", "B"), ("h2", "b1", "B", "B")]
    trials = pd.DataFrame(rows, columns=["subject", "item", "target", "response"]).assign(
        subject_kind="human", condition="zero-shot", rt_ms=1000.0)
    model = pd.DataFrame({"subject": "m", "subject_kind": "model", "condition": "zero-shot", "item": ["a1", "b1"],
                          "target": ["A", "B"], "response": ["A", "B"], "rt_ms": np.nan, "p_target": [0.8, 0.6],
                          "p_response": [0.8, 0.6]})
    probabilities = pd.DataFrame({"subject": "m", "condition": "zero-shot", "item": ["a1", "a1", "b1", "b1"],
                                  "class": ["A", "B", "A", "B"], "p": [0.8, 0.2, 0.4, 0.6]})
    return pd.concat([trials, model], ignore_index=True), probabilities


def test_soft_labels_count_every_answer_and_share_the_guesses(study):
    table = soft_labels(study).set_index(["condition", "item", "answer"]).sort_index()
    # zero-shot a1: h1 A, h2 B, h3 idk (the simulated h4 and attention-failed h5 are excluded).
    a1 = table.loc[("zero-shot", "a1")]
    assert dict(a1["count"]) == {"A": 1, "B": 1, "idk": 1}
    assert a1.loc["A", "share"] == pytest.approx(1 / 3) and a1.loc["A", "soft_label"] == pytest.approx(1 / 2)
    assert math.isnan(a1.loc["idk", "soft_label"])
    c1 = table.loc[("zero-shot", "c1")]  # everyone said idk: no soft label
    assert list(c1.index) == ["idk"] and math.isnan(c1.loc["idk", "soft_label"])
    assert set(table.reset_index()["condition"]) <= {"zero-shot", "one-shot", "two-shot"}
    sums = table.reset_index().groupby(["condition", "item"])["share"].sum()
    assert sums.to_numpy() == pytest.approx(np.ones(len(sums)))


def test_cross_entropy_kl_entropy_and_rho_have_their_hand_values():
    trials, probabilities = tiny_study()
    enc = encode(prepare_trials(trials))
    table = alignment(enc, probabilities=validate_probabilities(probabilities, enc), n_resamples=0)
    values = table.set_index("quantity")["estimate"]
    ce_a1 = -(2 / 3 * math.log(0.8) + 1 / 3 * math.log(0.2))
    ce_b1 = -math.log(0.6)
    h_a1 = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert values["cross_entropy"] == pytest.approx((ce_a1 + ce_b1) / 2, abs=1e-12)
    assert values["human_entropy"] == pytest.approx(h_a1 / 2, abs=1e-12)
    assert values["kl_divergence"] == pytest.approx((ce_a1 + ce_b1 - h_a1) / 2, abs=1e-12)
    # Humans: a1 2/4 right, b1 2/2; the model gives the harder item the higher p: rho = -1 over items and classes.
    assert values["spearman_items"] == pytest.approx(-1.0)
    assert values["spearman_classes"] == pytest.approx(-1.0)
    assert set(table["n_units"]) == {2}


def test_without_probability_vectors_only_the_rank_correlations_are_reported():
    trials, _ = tiny_study()
    table = alignment(trials, n_resamples=0)
    assert set(table["quantity"]) == {"spearman_items", "spearman_classes"}


def expanded_spearman(x, y, w) -> float:
    """Spearman's rho of the sample in which pair j appears w_j times: mid-ranks by hand, then Pearson."""
    xs = [a for a, n in zip(x, w, strict=True) for _ in range(int(n))]
    ys = [b for b, n in zip(y, w, strict=True) for _ in range(int(n))]

    def ranks(values):
        order = sorted(values)
        return [(order.index(v) + 1 + len(order) - order[::-1].index(v)) / 2 for v in values]

    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else math.nan


def test_the_weighted_rank_correlation_is_the_rank_correlation_of_the_expanded_sample():
    rng = np.random.default_rng(4)
    checked = 0
    for _ in range(200):
        n = int(rng.integers(2, 10))
        x = rng.integers(0, 4, n).astype(float)  # few values: many ties, as item accuracies with k answers
        y = rng.random(n).round(1)
        w = rng.integers(0, 3, n).astype(float)
        expected = expanded_spearman(x, y, w) if w.sum() >= 2 else math.nan
        got = weighted_spearman(x, y, w)[0]
        if math.isnan(expected):
            assert math.isnan(got)
            continue
        assert got == pytest.approx(expected, abs=1e-9)
        checked += 1
    assert checked > 100


def test_cross_entropy_recovers_its_known_population_value_with_covering_intervals():
    population = Population(n_classes=12)
    truth = model_cross_entropy_truth(population)
    estimates, hits, n = [], 0, 25
    for seed in range(n):
        study = simulate_study(population, n_participants=40, items_per_class=20, k=5, seed=seed)
        enc = encode(prepare_trials(study.trials()))
        table = alignment(enc, probabilities=validate_probabilities(study.probabilities(), enc), n_resamples=300,
                          seed=seed)
        row = table.set_index("quantity").loc["cross_entropy"]
        estimates.append(row["estimate"])
        hits += row["ci_low"] <= truth <= row["ci_high"]
    assert np.mean(estimates) == pytest.approx(truth, abs=0.03)
    assert hits / n >= 0.85


def test_a_model_blind_to_difficulty_has_rank_correlations_near_0_and_intervals_covering_it():
    blind = Population(n_classes=12, model_coupling=0.0)
    values, hits, n = {"spearman_items": [], "spearman_classes": []}, {"spearman_items": 0, "spearman_classes": 0}, 25
    for seed in range(n):
        study = simulate_study(blind, n_participants=40, items_per_class=20, k=5, seed=50 + seed)
        table = alignment(study.trials(), n_resamples=300, seed=seed).set_index("quantity")
        for quantity in values:
            values[quantity].append(table.loc[quantity, "estimate"])
            hits[quantity] += table.loc[quantity, "ci_low"] <= 0 <= table.loc[quantity, "ci_high"]
    for quantity in values:
        assert abs(np.mean(values[quantity])) < 0.1, quantity
        assert hits[quantity] / n >= 0.85, (quantity, hits[quantity])


def test_a_model_driven_by_the_same_difficulty_as_people_is_aligned():
    coupled = Population(n_classes=12, model_coupling=1.5, class_sd=1.5)
    study = simulate_study(coupled, n_participants=40, items_per_class=20, k=5, seed=3)
    table = alignment(study.trials(), n_resamples=300).set_index("quantity")
    assert table.loc["spearman_items", "ci_low"] > 0.2
    assert table.loc["spearman_classes", "ci_low"] > 0.5


def test_a_model_that_knows_the_peoples_answer_distribution_has_a_small_kl_with_many_answers():
    population = Population(n_classes=12)
    study = simulate_study(population, n_participants=60, items_per_class=10, k=40, seed=8)
    truth, _ = human_answer_distribution(study)
    # The model answers the most probable class of the people's distribution.
    knowing = study.probabilities(truth)
    trials = study.trials()
    model = trials["subject_kind"] == "model"
    names = np.array(population.class_names, dtype=object)
    trials.loc[model, "response"] = names[truth.argmax(axis=1)]
    trials.loc[model, "p_target"] = truth[np.arange(len(truth)), study.item_class]
    trials.loc[model, "p_response"] = truth.max(axis=1)
    enc = encode(prepare_trials(trials))
    kl_knowing = alignment(enc, probabilities=validate_probabilities(knowing, enc), n_resamples=0) \
        .set_index("quantity").loc["kl_divergence", "estimate"]
    enc_own = encode(prepare_trials(study.trials()))
    kl_own = alignment(enc_own, probabilities=validate_probabilities(study.probabilities(), enc_own), n_resamples=0) \
        .set_index("quantity").loc["kl_divergence", "estimate"]
    # About (classes answered - 1) / (2 x answers) of sampling noise is left; the simulated model is far off.
    assert kl_knowing < 0.15 and kl_knowing < kl_own / 5
