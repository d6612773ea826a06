"""Error consistency: hand values, model-vs-human's per-pair mean on full-overlap data, and recovery in sparse designs.

The sparse-design estimator is checked against the value it must recover: the full-overlap mean of
per-pair kappas of the same simulated people (tests/simulated_studies.py), at k = 3, 5 and 10 answers
per item.
"""

import itertools
import warnings
from fractions import Fraction as F

import numpy as np
import pandas as pd
import pytest

import evaluator.report.consistency as consistency_module
from evaluator.report import consistency_table, error_consistency
from tests.simulated_studies import Population, full_overlap_consistency, model_vs_human_kappa, simulate_study


def rows(table, idk="error"):
    return table[table["idk"] == idk].set_index("pair_kind")


def test_the_first_four_columns_and_pair_kinds_stay_as_before(consistency_trials):
    table = consistency_table(consistency_trials)
    assert list(table.columns[:4]) == ["condition", "pair_kind", "error_consistency", "n_pairs"]
    assert list(table.columns[4:]) == ["idk", "ci_low", "ci_high", "n_resamples", "resample"]
    assert list(rows(table).index) == ["human-human", "noise-ceiling", "human-model:m"]
    assert set(table["idk"]) == {"error", "dropped"}


def test_error_consistency_with_idk_as_error_matches_the_hand_computation(consistency_trials):
    r = rows(consistency_table(consistency_trials))
    # p_u1 = 3/5 (i1-i5), p_u2 = 2/5 (i2-i6), p_m = 4/6 over all their answers.
    # u1-u2 on i2-i5: 3 of 4 agree; c = 12/25 -> (3/4 - 12/25) / (13/25) = 27/52.
    assert r.loc["human-human", "error_consistency"] == pytest.approx(27 / 52, abs=1e-12)
    assert r.loc["human-human", "n_pairs"] == 1
    # u1-m: 3 of 5 agree, c = 8/15 -> (3 - 5*8/15)/(7/15) = 5/7; u2-m: 4 of 5, c = 7/15 -> 25/8; / (5 + 5).
    assert r.loc["human-model:m", "error_consistency"] == pytest.approx(float((F(5, 7) + F(25, 8)) / 10), abs=1e-12)
    assert r.loc["human-model:m", "n_pairs"] == 2


def test_the_noise_ceiling_sets_each_person_against_the_majority_of_the_others(consistency_trials):
    r = rows(consistency_table(consistency_trials))
    # Items with another answer: i2-i5. The other's answer is right for u1 on i2 only, for u2 on i2 and i4
    # (u1's idk on i5 is a wrong majority) -> p_M = 3/8.
    # u1 [1,0,1,0] vs [1,0,0,0]: 3 of 4, c = 19/40 -> 44/21; u2 [1,0,0,0] vs [1,0,1,0]: 3 of 4, c = 21/40 -> 36/19.
    expected = (F(44, 21) + F(36, 19)) / 8
    assert r.loc["noise-ceiling", "error_consistency"] == pytest.approx(float(expected), abs=1e-12)
    assert r.loc["noise-ceiling", "n_pairs"] == 2


def test_error_consistency_with_idk_dropped_matches_the_hand_computation(consistency_trials):
    r = rows(consistency_table(consistency_trials), "dropped")
    # u1's idk on i5 is gone: p_u1 = 3/4. u1-u2 on i2-i4: 2 of 3 agree, c = 9/20 -> 13/33.
    assert r.loc["human-human", "error_consistency"] == pytest.approx(13 / 33, abs=1e-12)
    # u1-m on i1-i4: 2 of 4, c = 7/12 -> -4/5; u2-m as before 25/8 (n = 5) -> (-4/5 + 25/8) / 9.
    assert r.loc["human-model:m", "error_consistency"] == pytest.approx(float((F(-4, 5) + F(25, 8)) / 9), abs=1e-12)


def test_error_consistency_is_undefined_when_both_subjects_are_always_right():
    assert np.isnan(error_consistency([True, True], [True, True]))
    assert error_consistency([True, False, True, False], [True, False, True, False]) == pytest.approx(1.0)


def test_on_full_overlap_data_it_equals_model_vs_humans_mean_of_pairwise_kappas():
    """Everyone answers every item (model-vs-human's design): the estimator is exactly its per-pair mean.

    The same check on model-vs-human's real `sketch` raw data (not shipped here: it is theirs) is
    benchmarks/check_model_vs_human.py; it agreed to about 1e-12 (docs/reports.md).
    """
    study = simulate_study(Population(), n_participants=7, items_per_class=20, k=7, seed=11)
    trials = study.trials(sparse=False)
    by_subject = {s: part for s, part in trials.groupby("subject")}
    people = sorted(s for s in by_subject if s != "model")
    human_human = np.mean([model_vs_human_kappa(by_subject[a], by_subject[b])
                           for a, b in itertools.combinations(people, 2)])
    human_model = np.mean([model_vs_human_kappa(by_subject[a], by_subject["model"]) for a in people])
    r = rows(consistency_table(trials))
    assert r.loc["human-human", "n_pairs"] == 21
    assert r.loc["human-human", "error_consistency"] == pytest.approx(human_human, abs=1e-9)
    assert r.loc["human-model:model", "error_consistency"] == pytest.approx(human_model, abs=1e-9)
    assert 0.1 < human_human < 0.9  # errors follow item difficulty, so people agree beyond chance


# k answers per item -> items per class: fewer answers per item need more items for the same precision.
RECOVERY_DESIGNS = [(3, 100), (5, 60), (10, 30)]


@pytest.mark.parametrize(("k", "items_per_class"), RECOVERY_DESIGNS)
@pytest.mark.parametrize("idk", ["error", "dropped"])
def test_the_sparse_estimate_recovers_the_full_overlap_value_within_0_03(k, items_per_class, idk):
    for seed in range(4):
        study = simulate_study(Population(), n_participants=60, items_per_class=items_per_class, k=k, seed=seed)
        truth = full_overlap_consistency(study, idk=idk)
        r = rows(consistency_table(study.trials()), idk)
        assert r.loc["human-human", "error_consistency"] == pytest.approx(truth["human-human"], abs=0.03), seed
        assert r.loc["human-model:model", "error_consistency"] == pytest.approx(truth["human-model"], abs=0.03), seed


def test_the_naive_mean_of_pairwise_kappas_would_not_recover_it():
    """Why the estimator changed: the plain mean over pairs of kappas on their 1-3 common items is biased to 0."""
    study = simulate_study(Population(), n_participants=60, items_per_class=10, k=5, seed=0)
    truth = full_overlap_consistency(study)["human-human"]
    right = study.full == study.item_class[None, :]
    mask = study.sparse_mask
    naive = [error_consistency(right[a][mask[a] & mask[b]], right[b][mask[a] & mask[b]])
             for a, b in itertools.combinations(range(len(right)), 2) if (mask[a] & mask[b]).any()]
    naive = np.nanmean(naive)
    estimate = rows(consistency_table(study.trials())).loc["human-human", "error_consistency"]
    assert truth - naive > 0.05
    assert abs(estimate - truth) < abs(naive - truth)


def test_without_shared_item_difficulty_every_consistency_and_the_ceiling_are_near_zero():
    flat = Population(item_sd=0.0, class_sd=0.0, model_coupling=0.0)
    study = simulate_study(flat, n_participants=60, items_per_class=60, k=5, seed=3)
    r = rows(consistency_table(study.trials()))
    for kind in ("human-human", "noise-ceiling", "human-model:model"):
        assert r.loc[kind, "error_consistency"] == pytest.approx(0.0, abs=0.03), kind


def test_the_noise_ceiling_lies_above_human_human_when_errors_follow_item_difficulty():
    study = simulate_study(Population(), n_participants=60, items_per_class=30, k=10, seed=1)
    r = rows(consistency_table(study.trials()))
    assert r.loc["noise-ceiling", "error_consistency"] > r.loc["human-human", "error_consistency"] + 0.05


def test_two_way_cis_bracket_the_estimate_and_cover_the_full_overlap_value():
    study = simulate_study(Population(), n_participants=60, items_per_class=10, k=5, seed=2)
    truth = full_overlap_consistency(study)
    table = consistency_table(study.trials(), n_resamples=300, seed=4)
    assert (table["resample"] == "two-way").all() and (table["n_resamples"] == 300).all()
    assert (table["ci_low"] <= table["error_consistency"]).all()
    assert (table["error_consistency"] <= table["ci_high"]).all()
    r = rows(table)
    for kind, known in (("human-human", truth["human-human"]), ("human-model:model", truth["human-model"])):
        assert r.loc[kind, "ci_low"] <= known <= r.loc[kind, "ci_high"], kind
    assert (r["ci_high"] - r["ci_low"]).min() > 0.02  # a real interval, not a point


def test_several_models_in_one_condition_each_get_their_rows():
    study = simulate_study(Population(), n_participants=20, items_per_class=3, k=3, seed=5)
    trials = study.trials()
    models = trials[trials["subject_kind"] == "model"]
    second = models.assign(subject="run · zero-shot prior", response=models["target"])
    table = consistency_table(pd.concat([trials, second], ignore_index=True))
    assert {"human-model:model", "human-model:run · zero-shot prior"} <= set(table["pair_kind"])
    assert len(table) == 2 * 4  # per idk convention: human-human, ceiling, two models


def test_a_condition_where_every_person_answered_idk_has_no_consistency_once_idk_is_dropped(consistency_trials):
    # Found by a mutant: the report used to fail here (nothing left to compare under the dropped convention).
    all_idk = consistency_trials.assign(response=consistency_trials["response"].where(
        consistency_trials["subject_kind"] == "model", "idk"))
    for n_resamples in (0, 20):
        table = consistency_table(all_idk, n_resamples=n_resamples)
        dropped = rows(table, "dropped")
        assert list(dropped.index) == ["human-human", "noise-ceiling", "human-model:m"]
        assert dropped["error_consistency"].isna().all() and (dropped["n_pairs"] == 0).all()
        assert dropped["ci_low"].isna().all() and dropped["ci_high"].isna().all() and (dropped["resample"] == "").all()
        # As errors, idk answers are all wrong: two people always wrong agree beyond no chance (undefined) ...
        error = rows(table, "error")
        assert np.isnan(error.loc["human-human", "error_consistency"])
        # ... and against the model (p_m = 4/6, so c = 1 - p_m = 1/3) both agree where m is wrong: on i4, i5 of
        # u1's i1-i5 and of u2's i2-i6 -> (2/5 - 1/3) / (2/3) = 1/10 each.
        assert error.loc["human-model:m", "error_consistency"] == pytest.approx(0.1, abs=1e-12)


def test_error_consistency_of_a_single_item_and_of_none():
    assert error_consistency([True], [False]) == 0.0  # c_exp = 0: observed agreement 0, kappa 0
    assert np.isnan(error_consistency([], []))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # undefined, not a division by zero
        assert np.isnan(error_consistency([False, False], [False, False]))


def test_a_models_answers_in_another_condition_leave_this_conditions_consistency_alone(consistency_trials):
    model = consistency_trials[consistency_trials["subject_kind"] == "model"]
    other = model.assign(condition="one-shot", response=np.where(model["target"] == "X", "Y", "X"))  # all wrong
    people = consistency_trials[consistency_trials["subject_kind"] == "human"].assign(condition="one-shot")
    both = pd.concat([consistency_trials, other, people], ignore_index=True)
    zero = consistency_table(both)
    pd.testing.assert_frame_equal(zero[zero["condition"] == "zero-shot"].reset_index(drop=True),
                                  consistency_table(consistency_trials))


def test_a_models_idk_is_a_wrong_answer_or_no_answer_as_the_convention_says(consistency_trials):
    # m's i5 was wrong (Y for X); as idk it is the same wrong answer, or (dropped) no answer at all.
    is_m_i5 = (consistency_trials["subject"] == "m") & (consistency_trials["item"] == "i5")
    with_idk = consistency_table(consistency_trials.assign(response=consistency_trials["response"].mask(is_m_i5, "idk")))
    as_before = consistency_table(consistency_trials)
    without = consistency_table(consistency_trials[~is_m_i5])
    pd.testing.assert_frame_equal(with_idk[with_idk["idk"] == "error"], as_before[as_before["idk"] == "error"])
    pd.testing.assert_frame_equal(with_idk[with_idk["idk"] == "dropped"], without[without["idk"] == "dropped"])
    assert not without[without["idk"] == "dropped"].equals(as_before[as_before["idk"] == "dropped"])


def test_consistency_intervals_raise_no_warning_when_a_resample_leaves_a_person_without_items(consistency_trials):
    # u3 answered only i1: in about 4 of 9 resamples i1 is not drawn and u3 has no accuracy.
    u3 = pd.DataFrame([["u3", "human", "zero-shot", "i1", "X", "X", 1000]], columns=consistency_trials.columns[:7])
    trials = pd.concat([consistency_trials, u3], ignore_index=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = consistency_table(trials, n_resamples=200, seed=1)
    assert table["ci_low"].notna().all()


def test_dense_designs_computed_from_answer_matrices_give_the_pair_by_pair_estimate(monkeypatch):
    # Above 3 million pair-item incidences the pairs come from matrix products and CIs resample people only;
    # below, pair by pair. Lowering the switch to 0 runs the matrix path on a small study: same estimates.
    # Sparse enough that many pairs share a single item (k = 3 answers per item, 30 people).
    study = simulate_study(Population(), n_participants=30, items_per_class=3, k=3, seed=6)
    pairwise = consistency_table(study.trials(), n_resamples=40, seed=2)
    monkeypatch.setattr(consistency_module, "_MAX_PAIR_ITEMS", 0)
    dense = consistency_table(study.trials(), n_resamples=40, seed=2)
    pd.testing.assert_frame_equal(dense[["condition", "pair_kind", "error_consistency", "n_pairs", "idk"]],
                                  pairwise[["condition", "pair_kind", "error_consistency", "n_pairs", "idk"]],
                                  rtol=0, atol=1e-6)
    human_human = dense["pair_kind"] == "human-human"
    assert (dense.loc[human_human, "resample"] == "participants").all()
    assert (pairwise.loc[human_human, "resample"] == "two-way").all()
    assert (dense["ci_low"] <= dense["error_consistency"] + 1e-9).all()
    assert (dense["error_consistency"] <= dense["ci_high"] + 1e-9).all()


def test_people_without_a_common_item_give_no_pair_and_no_value():
    trials = pd.DataFrame([["u1", "human", "zero-shot", "i1", "X", "X", 1000], ["u2", "human", "zero-shot", "i2", "Y", "X", 1000],
                           ["m", "model", "zero-shot", "i1", "X", "X", None], ["m", "model", "zero-shot", "i3", "Y", "X", None]],
                          columns=["subject", "subject_kind", "condition", "item", "target", "response", "rt_ms"])
    for n_resamples in (0, 20):
        r = rows(consistency_table(trials, n_resamples=n_resamples))
        assert np.isnan(r.loc["human-human", "error_consistency"]) and r.loc["human-human", "n_pairs"] == 0
        assert np.isnan(r.loc["human-human", "ci_low"])
        # Only u1 shares an item with m (i1, both right): p_u1 = 1, p_m = 1/2, c = 1/2 -> (1 - 1/2) / (1/2) = 1.
        assert r.loc["human-model:m", "error_consistency"] == pytest.approx(1.0, abs=1e-12)
        assert r.loc["human-model:m", "n_pairs"] == 1


def test_a_person_with_one_common_item_counts_and_one_whose_kappa_is_undefined_does_not(consistency_trials):
    # u3 answered only i1 (right): with m (p_m = 4/6) c = 4/6, both right -> (1 - 4/6) / (1 - 4/6) = 1, n = 1.
    # u4 answered only i2 and i6 (right) against "perfect" (right everywhere): c = 1, no kappa.
    perfect = consistency_trials[consistency_trials["subject"] == "m"].assign(
        subject="perfect", response=lambda t: t["target"])
    extra = pd.DataFrame([["u3", "human", "zero-shot", "i1", "X", "X", 1000], ["u4", "human", "zero-shot", "i2", "Y", "Y", 1000],
                          ["u4", "human", "zero-shot", "i6", "Y", "Y", 1000]], columns=consistency_trials.columns[:7])
    r = rows(consistency_table(pd.concat([consistency_trials, perfect, extra], ignore_index=True)))
    # u1-m 5/7 (n 5), u2-m 25/8 (n 5), u3-m 1 (n 1); u4-m: p_u4 = 1, c = 4/6, agree on i2, i6 -> 2 (n 2).
    assert r.loc["human-model:m", "error_consistency"] == pytest.approx(
        float((F(5, 7) + F(25, 8) + 1 + 2) / 13), abs=1e-12)
    assert r.loc["human-model:m", "n_pairs"] == 4
    # Against "perfect": u1 c = 3/5, agree 3 of 5 -> 0; u2 c = 2/5, agree 2 of 5 -> 0; u3 c = 1 and u4 c = 1 left out.
    assert r.loc["human-model:perfect", "error_consistency"] == pytest.approx(0.0, abs=1e-12)
    assert r.loc["human-model:perfect", "n_pairs"] == 2


def test_consistency_has_no_interval_unless_asked_and_resamples_with_seed_0_by_default(consistency_trials):
    plain = consistency_table(consistency_trials)
    assert (plain["n_resamples"] == 0).all() and plain["ci_low"].isna().all() and (plain["resample"] == "").all()
    pd.testing.assert_frame_equal(consistency_table(consistency_trials, n_resamples=30),
                                  consistency_table(consistency_trials, n_resamples=30, seed=0))


def test_a_condition_without_people_is_skipped_and_the_later_ones_are_still_measured(consistency_trials):
    later = consistency_trials.assign(condition=np.where(consistency_trials["subject_kind"] == "human", "one-shot",
                                                         "zero-shot"))
    later = pd.concat([later, later[later["subject_kind"] == "model"].assign(condition="one-shot")], ignore_index=True)
    table = consistency_table(later)
    assert set(table["condition"]) == {"one-shot"}
    pd.testing.assert_frame_equal(table.drop(columns="condition"),
                                  consistency_table(consistency_trials).drop(columns="condition"))


@pytest.mark.parametrize(("limit", "resample"), [(6, "two-way"), (5, "participants")])
def test_the_matrix_path_starts_just_above_the_limit_of_pair_item_incidences(monkeypatch, limit, resample):
    # Three people answer the same two items: 2 items x 3 pairs = 6 pair-item incidences.
    answers = {"h1": ("X", "X"), "h2": ("X", "Y"), "h3": ("Y", "Y")}
    trials = pd.DataFrame([[person, "human", "zero-shot", item, target, response, 1000]
                           for person, responses in answers.items()
                           for item, target, response in zip(("i1", "i2"), ("X", "Y"), responses, strict=True)],
                          columns=["subject", "subject_kind", "condition", "item", "target", "response", "rt_ms"])
    monkeypatch.setattr(consistency_module, "_MAX_PAIR_ITEMS", limit)
    table = consistency_table(trials, n_resamples=20, seed=0)
    assert (table.loc[table["pair_kind"] == "human-human", "resample"] == resample).all()
