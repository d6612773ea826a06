"""Statistics against hand-computed or textbook values (fractions worked out on paper)."""

import numpy as np
import pandas as pd
import pytest

from evaluator.report import (
    calibration,
    expected_calibration_error,
    fleiss_kappa,
    fleiss_table,
    idk_gain,
    mcnemar_exact,
    mcnemar_table,
    response_times,
)

# Wikipedia's "Fleiss' kappa" worked example: 10 subjects, 14 raters, 5 categories, kappa ≈ 0.210.
WIKIPEDIA_FLEISS = np.array([
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
])


def test_fleiss_kappa_reproduces_the_textbook_example():
    # P_bar = 688/1820, P_e = 4170/19600 -> kappa = 4211/20059 = 0.2099...
    assert fleiss_kappa(WIKIPEDIA_FLEISS) == pytest.approx(4211 / 20059, abs=1e-12)
    assert round(fleiss_kappa(WIKIPEDIA_FLEISS), 3) == 0.210


def test_fleiss_kappa_among_humans_handles_unequal_numbers_of_raters(study):
    table = fleiss_table(study).set_index("condition")
    # Zero-shot items: a1 A,B,idk  a2 A,A,idk  b1 idk,idk,B  b2 C,idk  c1 idk x3.
    # P_i = 0, 1/3, 1/3, 0, 1 -> P_bar 1/3; shares A 3, B 2, C 1, idk 8 of 14 -> P_e 78/196.
    assert table.loc["zero-shot", "kappa"] == pytest.approx(-19 / 177, abs=1e-12)
    assert not table.loc["zero-shot", "equal_raters"]
    assert table.loc["two-shot", "n_items"] == 3  # a2 has a single answer: no agreement to measure


def test_fleiss_kappa_built_from_trials_equals_the_textbook_matrix():
    rows = []
    for item, counts in enumerate(WIKIPEDIA_FLEISS):
        answers = np.repeat(["A", "B", "C", "D", "idk"], counts)
        rows += [(f"r{r}", "human", "zero-shot", f"i{item}", "A", answer, 1000) for r, answer in enumerate(answers)]
    trials = pd.DataFrame(rows, columns=["subject", "subject_kind", "condition", "item", "target", "response", "rt_ms"])
    assert fleiss_table(trials).iloc[0]["kappa"] == pytest.approx(4211 / 20059, abs=1e-12)


def test_mcnemar_exact_p_matches_the_binomial_hand_value():
    assert mcnemar_exact(1, 7) == pytest.approx(2 * (1 + 8) / 2**8, abs=1e-15)  # 0.0703125
    assert mcnemar_exact(7, 1) == mcnemar_exact(1, 7)
    assert mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 1000) == 2.0**-999  # large n: exact integers, no overflow


def test_mcnemar_table_pairs_human_majority_vote_with_each_model_per_condition(study):
    table = mcnemar_table(study).set_index(["condition", "model"])
    row = table.loc[("zero-shot", "clip")]
    # Human votes right only on a2; CLIP right on all but a2 -> b = 1, c = 4, p = 2 * 6/32.
    counts = row[["both_correct", "human_only_correct", "model_only_correct", "both_wrong"]].tolist()
    assert counts == [0, 1, 4, 0]
    assert row["p_value"] == pytest.approx(0.375, abs=1e-15)
    assert ("two-shot", "clip") not in table.index  # CLIP has no two-shot run


def test_idk_gain_within_subject_splits_the_gain_by_each_participants_zero_shot_idk(study):
    row = idk_gain(study).iloc[0]
    # 14 participant-item pairs; zero-shot right 4, one-shot right 9; the 8 zero-shot idk pairs gain 4.
    assert row["design"] == "within"
    assert (row["n_units"], row["n_units_in_split"]) == (14, 8)
    assert row["gain_total"] == pytest.approx(500 / 14, abs=1e-9)
    assert row["gain_from_split"] == pytest.approx(400 / 14, abs=1e-9)
    assert row["gain_from_rest"] == pytest.approx(100 / 14, abs=1e-9)
    assert row["share_from_split"] == pytest.approx(0.8, abs=1e-12)


def test_idk_gain_between_subjects_splits_items_by_majority_and_any_idk(study):
    table = idk_gain(study, design="between")
    # Item gains: a1 2/3, a2 0, b1 1/3, b2 1/2, c1 1/3 -> total 11/30; majority idk: b1, c1 -> 2/15.
    majority, any_idk = table.iloc[0], table.iloc[1]
    assert majority["gain_total"] == pytest.approx(1100 / 30, abs=1e-9)
    assert majority["gain_from_split"] == pytest.approx(200 / 15, abs=1e-9)
    assert majority["gain_from_rest"] == pytest.approx(700 / 30, abs=1e-9)
    assert any_idk["gain_from_split"] == pytest.approx(1100 / 30, abs=1e-9)


def test_expected_calibration_error_matches_the_hand_value(study):
    summary, bins = calibration(study)
    # Bins of 1/15: {0.9, 0.88} right -> |1 - 0.89| * 2/5; 0.62 wrong; 0.7 right; 0.95 right.
    clip = summary.set_index(["subject", "condition"]).loc[("clip", "zero-shot")]
    assert clip["ece"] == pytest.approx((2 * 0.11 + 0.62 + 0.3 + 0.05) / 5, abs=1e-12)
    assert len(bins[(bins["subject"] == "clip") & (bins["condition"] == "zero-shot")]) == 15
    assert expected_calibration_error([1.0, 0.0], [True, False]) == pytest.approx(0.0)
    assert "abstainer" not in set(summary["subject"])  # no p_response: not calibrated


def test_response_times_report_median_and_interquartile_range(study):
    table = response_times(study).set_index(["subject_kind", "condition"])
    two = table.loc[("human", "two-shot")]
    # 900 950 1000 1050 1100 1150 1200: median 1050, linear quartiles 975 and 1125.
    assert (two["n"], two["median_ms"], two["q1_ms"], two["q3_ms"], two["iqr_ms"]) == (7, 1050, 975, 1125, 150)
    assert ("model", "zero-shot") not in table.index  # models have no response times
