"""People and model together: a perfect model stays perfect, complementary errors are repaired, the confusion
model is fitted out of sample, and the temperature recovers a known miscalibration."""

import math

import numpy as np
import pandas as pd
import pytest

from evaluator.report import encode, prepare_trials, validate_probabilities
from evaluator.report.combination import _folds, _temperature, combination
from tests.simulated_studies import Population, simulate_study


def accuracies(table: pd.DataFrame) -> pd.Series:
    return table[table["versus"] == ""].set_index("method")["estimate"]


def run(trials: pd.DataFrame, probabilities: pd.DataFrame | None, **kw) -> pd.DataFrame:
    enc = encode(prepare_trials(trials))
    vectors = validate_probabilities(probabilities, enc) if probabilities is not None else None
    return combination(enc, probabilities=vectors, **kw)


def perfect_model(study, trials: pd.DataFrame, p_target: float):
    """The model puts p_target on the true class and spreads the rest evenly: always right."""
    n_items, n_classes = len(study.item_class), study.population.n_classes
    probs = np.full((n_items, n_classes), (1 - p_target) / (n_classes - 1))
    probs[np.arange(n_items), study.item_class] = p_target
    trials = trials.copy()
    model = trials["subject_kind"] == "model"
    trials.loc[model, "response"] = trials.loc[model, "target"]
    trials.loc[model, "p_target"] = p_target
    trials.loc[model, "p_response"] = p_target
    return trials, study.probabilities(probs)


@pytest.mark.parametrize("p_target", [1.0, 0.5])
@pytest.mark.parametrize("people", ["simulated", "adversarial"])
def test_a_perfect_model_combined_with_anything_is_perfect(p_target, people):
    population = Population(n_classes=12)
    study = simulate_study(population, n_participants=40, items_per_class=10, k=5, seed=1)
    trials, probabilities = perfect_model(study, study.trials(), p_target)
    if people == "adversarial":  # everyone answers the same wrong class on every item
        humans = trials["subject_kind"] == "human"
        wrong = {c: population.class_names[(i + 1) % 12] for i, c in enumerate(population.class_names)}
        trials.loc[humans, "response"] = trials.loc[humans, "target"].map(wrong)
    table = run(trials, probabilities, n_resamples=200)
    values = table[table["versus"] == ""].set_index("method")
    for method in ("model alone", "model + one human", "model + all humans"):
        assert (values.loc[method, ["estimate", "ci_low", "ci_high"]] == 100).all(), method
    if people == "adversarial":
        assert values.loc["humans: accuracy", "estimate"] == 0


def complementary_study(items_per_class: int = 20, seed: int = 0):
    """Classes A-D. The model cannot tell A from B (0.51 / 0.49, always answering A) and is sure of C and D;
    people always get A and B right and answer C or D at random on C and D items."""
    rng = np.random.default_rng(seed)
    classes = ["A", "B", "C", "D"]
    rows, probs = [], []
    for c in classes:
        for j in range(items_per_class):
            item = f"{c}{j}"
            for p in rng.choice(30, 5, replace=False):
                answer = c if c in "AB" else str(rng.choice(["C", "D"]))
                rows.append((f"p{p}", "human", item, c, answer))
            vector = {"A": [0.51, 0.49, 0, 0], "B": [0.51, 0.49, 0, 0], "C": [0, 0, 0.98, 0.02],
                      "D": [0, 0, 0.02, 0.98]}[c]
            rows.append(("model", "model", item, c, classes[int(np.argmax(vector))]))
            probs += [("model", "zero-shot", item, k, p) for k, p in zip(classes, vector, strict=True)]
    trials = pd.DataFrame(rows, columns=["subject", "subject_kind", "item", "target", "response"]).assign(
        condition="zero-shot", rt_ms=1000.0)
    return trials, pd.DataFrame(probs, columns=["subject", "condition", "item", "class", "p"])


def test_complementary_errors_of_people_and_model_are_repaired_by_the_combination():
    trials, probabilities = complementary_study()
    table = run(trials, probabilities, n_resamples=300)
    values = accuracies(table)
    assert values["model alone"] == pytest.approx(75.0)  # wrong on every B item
    assert values["humans: accuracy"] == pytest.approx(75.0, abs=6)  # half right on C and D
    assert values["model + all humans"] >= 98
    assert values["model + one human"] >= 98  # one person's A/B answer settles what the model cannot
    diffs = table[table["versus"] != ""].set_index(["method", "versus"])
    gain = diffs.loc[("model + all humans", "model alone")]
    assert gain["ci_low"] > 15  # paired within resamples: a clear gain
    assert set(table["model_input"]) == {"probabilities"}


def test_without_probability_vectors_the_model_answer_and_its_p_response_are_used():
    population = Population(n_classes=8)
    study = simulate_study(population, n_participants=20, items_per_class=10, k=3, seed=2)
    table = run(study.trials(), None, n_resamples=50)
    assert set(table["model_input"]) == {"answer + p_response"}
    assert accuracies(table)["model alone"] == pytest.approx(
        (study.model == study.item_class).reshape(8, 10).mean(axis=1).mean() * 100)
    assert run(study.trials().drop(columns=["p_target", "p_response"]), None, n_resamples=0).empty


def confused_answers(n_classes: int, items_per_class: int, *, per_item: bool, seed: int = 0) -> pd.DataFrame:
    """Four people give every item the same wrong answer: the next class (class-level confusion) or, with
    ``per_item``, a wrong class drawn for that item alone."""
    rng = np.random.default_rng(seed)
    classes = [f"c{j:02d}" for j in range(n_classes)]
    rows = []
    for i, c in enumerate(classes):
        for j in range(items_per_class):
            wrong = classes[(i + int(rng.integers(1, n_classes)) if per_item else i + 1) % n_classes]
            rows += [(f"p{p}", "human", f"{c}-{j}", c, wrong) for p in range(4)]
            rows.append(("model", "model", f"{c}-{j}", c, c))
    trials = pd.DataFrame(rows, columns=["subject", "subject_kind", "item", "target", "response"])
    return trials.assign(condition="zero-shot", rt_ms=1000.0, p_target=0.3, p_response=0.3)


def test_the_confusion_model_learns_from_the_other_items_never_from_the_item_itself():
    # A class-level confusion is learnt on the other folds' items of the class and undone.
    learnt = accuracies(run(confused_answers(6, 10, per_item=False), None, n_resamples=0))
    assert learnt["humans: majority vote"] == 0 and learnt["humans: confusion-model vote"] == 100
    # One item a class with its own confusion: only the item itself could tell, and it is held out. Fitted in
    # sample the vote would undo every confusion (100 %); out of sample it stays near chance.
    held_out = accuracies(run(confused_answers(30, 1, per_item=True), None, n_resamples=0))
    assert held_out["humans: confusion-model vote"] < 40


def test_the_fitted_temperature_undoes_a_known_overconfidence():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1.5, (20000, 10))
    calibrated = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    target = (calibrated.cumsum(axis=1) > rng.random((20000, 1))).argmax(axis=1)  # labels drawn from it
    overconfident = 2.0 * logits  # log probabilities (up to a constant) of a model twice too sure
    assert _temperature(overconfident, target) == pytest.approx(2.0, rel=0.05)
    assert _temperature(logits, target) == pytest.approx(1.0, rel=0.05)


def test_folds_deal_every_class_over_every_fold():
    target = np.repeat(np.arange(7), 10)
    folds = _folds(target, 5, np.random.default_rng(1))
    for cls in range(7):
        assert sorted(np.bincount(folds[target == cls], minlength=5)) == [2, 2, 2, 2, 2]
    small = _folds(np.arange(7), 5, np.random.default_rng(1))  # one item a class: still spread over the folds
    assert len(set(small)) == 5


def test_on_simulated_studies_the_combination_is_reported_for_each_condition_and_model():
    population = Population(n_classes=10)
    parts = [simulate_study(population, n_participants=30, items_per_class=10, k=5, seed=s, condition=c).trials()
             for s, c in enumerate(("zero-shot", "one-shot"))]
    table = run(pd.concat(parts, ignore_index=True), None, n_resamples=100)
    assert set(table["condition"]) == {"zero-shot", "one-shot"}
    assert (table.groupby("condition").size() == 11).all()
    plain = table[table["versus"] == ""]
    assert (plain["ci_low"] <= plain["estimate"] + 1e-9).all() and (plain["estimate"] <= plain["ci_high"] + 1e-9).all()
    assert not math.isnan(plain["temperature"].iloc[0])
