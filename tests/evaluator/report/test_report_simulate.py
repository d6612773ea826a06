"""The simulator core the planner uses: the app's allocation, populations matching expected values, model vectors."""

import numpy as np
import pytest

from evaluator.report.simulate import Population, simulate_study


def test_the_apps_allocation_fills_the_least_filled_items_up_to_k():
    study = simulate_study(Population(n_classes=6), n_participants=20, items_per_class=5, k=3, per_person=4, seed=1)
    mask = study.sparse_mask
    per_item, per_person = mask.sum(axis=0), mask.sum(axis=1)
    assert per_item.max() <= 3
    # 30 items x 3 answers = 90 slots: the first 22 people get 4 items, the 23rd the 2 left; 20 people fill 80.
    assert (per_person == 4).all() and per_item.max() - per_item.min() <= 1
    full = simulate_study(Population(n_classes=6), n_participants=30, items_per_class=5, k=3, per_person=4, seed=1)
    assert (full.sparse_mask.sum(axis=0) == 3).all()
    assert list(full.sparse_mask.sum(axis=1)[21:24]) == [4, 2, 0]  # late participants find the design full
    assert (full.full[~full.sparse_mask] == -1).all()  # only the design's answers are drawn


def test_the_k_per_item_design_gives_every_item_exactly_k_different_people():
    study = simulate_study(Population(n_classes=5), n_participants=12, items_per_class=4, k=3, seed=2)
    assert (study.sparse_mask.sum(axis=0) == 3).all()
    assert study.full.min() >= 0


def test_a_population_matching_expected_values_reproduces_them():
    population = Population(n_classes=10).matching(accuracy=0.6, idk_rate=0.15, model_accuracy=0.8)
    assert population.expected_accuracy() == pytest.approx(0.6, abs=1e-9)
    assert population.expected_idk_rate() == pytest.approx(0.15, abs=1e-9)
    assert population.expected_model_accuracy() == pytest.approx(0.8, abs=1e-9)
    right, idk, model = [], [], []
    for seed in range(10):
        study = simulate_study(population, n_participants=50, items_per_class=30, k=5, per_person=30, seed=seed)
        trials = study.trials()
        humans = trials[trials["subject_kind"] == "human"]
        right.append((humans["response"] == humans["target"]).mean())
        idk.append((humans["response"] == "idk").mean())
        model.append((study.model == study.item_class).mean())
    assert np.mean(right) == pytest.approx(0.6, abs=0.015)
    assert np.mean(idk) == pytest.approx(0.15, abs=0.01)
    assert np.mean(model) == pytest.approx(0.8, abs=0.015)
    with pytest.raises(ValueError, match="below the error rate"):
        Population().matching(accuracy=0.9, idk_rate=0.2)


def test_the_models_vectors_sum_to_1_and_put_its_confidence_on_its_answer():
    study = simulate_study(Population(n_classes=7), n_participants=10, items_per_class=6, k=3, seed=4)
    probs = study.model_probabilities()
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert (probs.argmax(axis=1) == study.model).all()
    trials = study.trials()
    model = trials[trials["subject_kind"] == "model"]
    assert model["p_response"].to_numpy() == pytest.approx(probs.max(axis=1))
    assert model["p_target"].to_numpy() == pytest.approx(probs[np.arange(len(probs)), study.item_class])
    long = study.probabilities()
    assert len(long) == probs.size and set(long.columns) == {"subject", "condition", "item", "class", "p"}
