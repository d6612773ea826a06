"""Statistics against hand-computed or textbook values (fractions worked out on paper)."""

import re
import warnings

import numpy as np
import pandas as pd
import pytest

from evaluator.report import (
    ReportInputError,
    calibration,
    expected_calibration_error,
    fleiss_kappa,
    fleiss_table,
    idk_gain,
    mcnemar_exact,
    mcnemar_table,
    reliability_bins,
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


TRIAL_COLUMNS = ["subject", "subject_kind", "condition", "item", "target", "response", "rt_ms"]


def answer(subject, condition, item, target, response, rt_ms=1000.0):
    """One trial row; h1, z1, o1 ... are people, any other name a model (without response times)."""
    kind = "human" if re.fullmatch(r"[hzo]\d+", subject) else "model"
    return [subject, kind, condition, item, target, response, rt_ms if kind == "human" else np.nan]


def test_mcnemar_table_counts_all_four_cells_for_each_model_in_name_order():
    # Items i1-i10 (i1-i5 class A, i6-i10 class B); humans h1-h3 agree: right on i1-i5, wrong on i6-i10.
    # zeta is right on i1, i2 and i6; alpha on every item. In zero-shot only alpha answered: no human row to pair.
    def response(item, right):
        target = "A" if item <= 5 else "B"
        return target, target if right else ("B" if target == "A" else "A")

    rows = []
    for i in range(1, 11):
        for subject, right in [("h1", i <= 5), ("h2", i <= 5), ("h3", i <= 5), ("zeta", i in (1, 2, 6)),
                               ("alpha", True)]:
            rows.append(answer(subject, "one-shot", f"i{i}", *response(i, right)))
        rows.append(answer("alpha", "zero-shot", f"i{i}", *response(i, True)))
    table = mcnemar_table(pd.DataFrame(rows, columns=TRIAL_COLUMNS))
    expected = pd.DataFrame(
        # alpha: b = 0, c = 5 -> p = 2 / 2^5; zeta: 2 both right, b = 3, c = 1, 4 both wrong -> p = 2 (1 + 4) / 2^4.
        [["one-shot", "alpha", 10, 5, 0, 5, 0, 2 / 32], ["one-shot", "zeta", 10, 2, 3, 1, 4, 10 / 16]],
        columns=["condition", "model", "n_items", "both_correct", "human_only_correct", "model_only_correct",
                 "both_wrong", "p_value"])
    pd.testing.assert_frame_equal(table, expected, check_dtype=False)


def test_mcnemar_exact_p_of_a_single_discordant_item_is_1():
    assert mcnemar_exact(1, 0) == mcnemar_exact(0, 1) == 1.0  # min(1, 2 x 1/2)


def test_fleiss_table_reports_items_raters_and_kappa_per_condition(study):
    table = fleiss_table(study)
    expected = pd.DataFrame([
        # zero-shot: raters 3 3 3 2 3; one-shot (hand, like zero-shot above): P_i 1, 1/3, 1/3, 0, 1/3 -> P_bar 2/5;
        # A 5, B 4, C 2, idk 3 of 14 -> P_e 54/196 -> kappa 61/355. two-shot: a1 A A, b1 C B, c1 C C (a2 has
        # one rater) -> P_bar 2/3, P_e (4 + 1 + 9)/36 -> 5/11.
        ["zero-shot", 5, 2.8, False, -19 / 177],
        ["one-shot", 5, 2.8, False, 61 / 355],
        ["two-shot", 3, 2.0, True, 5 / 11],
    ], columns=["condition", "n_items", "mean_raters_per_item", "equal_raters", "kappa"])
    pd.testing.assert_frame_equal(table, expected, check_dtype=False, rtol=0, atol=1e-12)


def test_fleiss_table_of_a_condition_where_no_item_has_two_raters_is_empty_and_undefined():
    rows = [answer("h1", "zero-shot", "a1", "A", "A"), answer("h2", "zero-shot", "a2", "A", "B")]
    table = fleiss_table(pd.DataFrame(rows, columns=TRIAL_COLUMNS))
    assert table[["condition", "n_items", "mean_raters_per_item", "equal_raters"]].values.tolist() == [
        ["zero-shot", 0, 0.0, False]]
    assert np.isnan(table.loc[0, "kappa"])


def test_fleiss_kappa_of_a_single_item_and_of_unanimous_raters():
    # [2, 1]: P = (2 + 0) / 6 = 1/3, P_e = 4/9 + 1/9 = 5/9 -> (1/3 - 5/9) / (4/9) = -1/2.
    assert fleiss_kappa([[2, 1]]) == pytest.approx(-0.5, abs=1e-12)
    assert np.isnan(fleiss_kappa([[1, 0], [0, 1]]))  # no item with two raters
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # undefined, not a division by zero
        assert np.isnan(fleiss_kappa([[3, 0], [2, 0]]))


def test_calibration_summarises_each_model_and_condition_and_passes_the_bins_on(study):
    blip = study[study["subject"] == "clip"].assign(subject="blip")  # listed after clip, sorted before it
    summary, bins = calibration(pd.concat([study, blip], ignore_index=True), n_bins=5)
    # Zero-shot: 0.9 0.88 0.95 right in bin 4 (|1 - 0.91| x 3/5), 0.62 wrong and 0.7 right in bin 3 (|0.5 - 0.66|
    # x 2/5). One-shot: 0.8 0.9 right in bin 4, 0.7 0.6 right in bin 3, 0.5 wrong in bin 2 -> (0.3 + 0.7 + 0.5) / 5.
    rows = [["zero-shot", 5, 0.8, 0.81, (0.27 + 0.32) / 5], ["one-shot", 5, 0.8, 0.7, 0.3]]
    expected = pd.DataFrame([[subject, *row] for subject in ("blip", "clip") for row in rows],
                            columns=["subject", "condition", "n", "accuracy", "mean_confidence", "ece"])
    pd.testing.assert_frame_equal(summary, expected, check_dtype=False, rtol=0, atol=1e-12)
    assert bins[["subject", "condition"]].drop_duplicates().values.tolist() == [
        [subject, condition] for subject in ("blip", "clip") for condition in ("one-shot", "zero-shot")]
    assert list(bins.index) == list(range(4 * 5))
    assert bins.groupby(["subject", "condition"])["n"].sum().tolist() == [5, 5, 5, 5]


def test_calibration_without_model_probabilities_is_an_empty_summary_with_its_columns(study):
    summary, bins = calibration(study.drop(columns=["p_target", "p_response"]))
    assert list(summary.columns) == ["subject", "condition", "n", "accuracy", "mean_confidence", "ece"]
    assert summary.empty and bins.empty


def test_expected_calibration_error_uses_15_equal_bins_unless_told_otherwise():
    # 0.8 and 0.86 share the bin [12/15, 13/15): accuracy 1/2 against confidence 0.83.
    assert expected_calibration_error([0.8, 0.86], [True, False]) == pytest.approx(0.33, abs=1e-12)
    # In 16 bins they part: (0.2 + 0.86) / 2.
    assert expected_calibration_error([0.8, 0.86], [True, False], n_bins=16) == pytest.approx(0.53, abs=1e-12)
    assert expected_calibration_error([0.7], [True]) == pytest.approx(0.3, abs=1e-12)
    assert np.isnan(expected_calibration_error([], []))


def test_reliability_bins_have_closed_ends_and_report_empty_bins_as_undefined():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # empty bins are NaN, not a division warning
        bins = reliability_bins([0.0, 0.05, 0.9, 1.0, 0.95], [False, True, True, True, False])
    assert list(bins.columns) == ["bin", "lower", "upper", "n", "mean_confidence", "accuracy"]
    assert bins["bin"].tolist() == list(range(15))
    np.testing.assert_allclose(bins["lower"], np.arange(15) / 15)
    np.testing.assert_allclose(bins["upper"], np.arange(1, 16) / 15)
    # 0.0 and 0.05 in [0, 1/15); 0.9 in [13/15, 14/15); 0.95 and 1.0 in the closed last bin [14/15, 1].
    assert bins["n"].tolist() == [2] + [0] * 12 + [1, 2]
    used = bins[bins["n"] > 0]
    np.testing.assert_allclose(used["mean_confidence"], [0.025, 0.9, 0.975])
    np.testing.assert_allclose(used["accuracy"], [0.5, 1.0, 0.5])
    assert bins.loc[bins["n"] == 0, ["mean_confidence", "accuracy"]].isna().all().all()


def test_response_time_whiskers_reach_the_last_values_within_one_and_a_half_iqr():
    # Sorted zero-shot times: q1 = 1000 (4th of 13), median 1200, q3 = 1400 (10th): IQR 400, fences 400 and 2000.
    # 400 and 2000 lie on the fences (inside), 300 and 2200 beyond them.
    zero = [300, 400, 800, 1000, 1100, 1150, 1200, 1250, 1300, 1400, 1500, 2000, 2200]
    rows = [answer("clip", "zero-shot", f"i{i}", "A", "A") for i in range(3)]  # no times: no row, and no stop
    rows += [answer(f"h{i}", "one-shot", "j1", "A", "A", rt) for i, rt in enumerate([1000, 3000])]
    rows += [answer(f"h{i}", "zero-shot", f"i{i}", "A", "A", rt) for i, rt in enumerate(zero)]
    table = response_times(pd.DataFrame(rows, columns=TRIAL_COLUMNS))
    expected = pd.DataFrame([
        ["human", "zero-shot", 13, 1200, 1000, 1400, 400, 400, 2000, 15600 / 13],
        ["human", "one-shot", 2, 2000, 1500, 2500, 1000, 1000, 3000, 2000],
    ], columns=["subject_kind", "condition", "n", "median_ms", "q1_ms", "q3_ms", "iqr_ms", "whisker_low_ms",
                "whisker_high_ms", "mean_ms"])
    pd.testing.assert_frame_equal(table, expected, check_dtype=False)


IDK_GAIN_COLUMNS = ["design", "split", "unit", "n_units", "n_units_in_split", "gain_total", "gain_from_split",
                    "gain_from_rest", "share_from_split"]


def between_subjects_idk_trials() -> pd.DataFrame:
    """Different people per condition. Zero-shot (z1-z4): i1 idk idk A, i2 A B, i3 idk B A B, i4 B B;
    one-shot (o1-o3): i1 A A, i2 A A B, i3 B, i5 A. Items in both: i1 (2/3 idk, gain 2/3), i2 (no idk, gain 1/6),
    i3 (1/4 idk, gain 1/2)."""
    zero = {"i1": ("A", ["idk", "idk", "A"]), "i2": ("A", ["A", "B"]), "i3": ("B", ["idk", "B", "A", "B"]),
            "i4": ("B", ["B", "B"])}
    one = {"i1": ("A", ["A", "A"]), "i2": ("A", ["A", "A", "B"]), "i3": ("B", ["B"]), "i5": ("A", ["A"])}
    rows = []
    for condition, prefix, items in (("zero-shot", "z", zero), ("one-shot", "o", one)):
        for item, (target, responses) in items.items():
            rows += [answer(f"{prefix}{k + 1}", condition, item, target, r) for k, r in enumerate(responses)]
    return pd.DataFrame(rows, columns=TRIAL_COLUMNS)


def test_idk_gain_between_subjects_splits_the_items_answered_in_both_conditions():
    table = idk_gain(between_subjects_idk_trials())  # auto: nobody answered an item in both conditions
    # Total (2/3 + 1/6 + 1/2) / 3 = 4/9; majority idk: i1 (2/3) / 3 = 2/9; any idk: i1 and i3 (7/6) / 3 = 7/18.
    expected = pd.DataFrame([
        ["between", "majority idk in zero-shot", "item", 3, 1, 400 / 9, 200 / 9, 200 / 9, 0.5],
        ["between", "any idk in zero-shot", "item", 3, 2, 400 / 9, 350 / 9, 50 / 9, 0.875],
    ], columns=IDK_GAIN_COLUMNS)
    pd.testing.assert_frame_equal(table, expected, check_dtype=False, rtol=0, atol=1e-9)
    pd.testing.assert_frame_equal(idk_gain(between_subjects_idk_trials(), design="between"), table)


def test_idk_gain_keeps_a_split_that_holds_no_unit():
    trials = between_subjects_idk_trials()
    trials = trials[trials["response"] != "idk"]  # no idk left: every gain comes from the rest
    table = idk_gain(trials, design="between")
    assert table[["split", "n_units", "n_units_in_split", "gain_from_split", "share_from_split"]].values.tolist() == [
        ["majority idk in zero-shot", 3, 0, 0.0, 0.0], ["any idk in zero-shot", 3, 0, 0.0, 0.0]]


def test_idk_gain_within_subjects_names_its_split_and_unit(study):
    table = idk_gain(study, design="within")
    assert table[["design", "split", "unit", "n_units", "n_units_in_split"]].values.tolist() == [
        ["within", "participant answered idk in zero-shot", "participant-item", 14, 8]]
    pd.testing.assert_frame_equal(idk_gain(study), table)


def test_idk_gain_of_a_single_pair_and_of_none():
    one = pd.DataFrame([answer("h1", "zero-shot", "a1", "A", "idk"), answer("h1", "one-shot", "a1", "A", "A")],
                       columns=TRIAL_COLUMNS)
    assert idk_gain(one).values.tolist() == [
        ["within", "participant answered idk in zero-shot", "participant-item", 1, 1, 100.0, 100.0, 0.0, 1.0]]
    apart = pd.DataFrame([answer("h1", "zero-shot", "a1", "A", "idk"), answer("h2", "one-shot", "a2", "A", "A")],
                         columns=TRIAL_COLUMNS)
    for design in ("auto", "within", "between"):
        table = idk_gain(apart, design=design)
        assert table.empty and list(table.columns) == IDK_GAIN_COLUMNS


def test_idk_gain_share_is_undefined_when_the_gains_cancel_and_exact_when_the_total_is_one_point():
    cancel = pd.DataFrame([
        answer("h1", "zero-shot", "a1", "A", "idk"), answer("h1", "one-shot", "a1", "A", "A"),  # +1, from idk
        answer("h2", "zero-shot", "a1", "A", "A"), answer("h2", "one-shot", "a1", "A", "B"),  # -1
    ], columns=TRIAL_COLUMNS)
    row = idk_gain(cancel).iloc[0]
    assert (row["gain_total"], row["gain_from_split"], row["gain_from_rest"]) == (0.0, 50.0, -50.0)
    assert np.isnan(row["share_from_split"])
    # 100 pairs, one of which gains (from idk): a total of exactly 1 point, all of it from the split.
    rows = []
    for p in range(10):
        for i in range(10):
            first = "idk" if (p, i) == (0, 0) else "A"
            rows += [answer(f"h{p}", "zero-shot", f"a{i}", "A", first), answer(f"h{p}", "one-shot", f"a{i}", "A", "A")]
    row = idk_gain(pd.DataFrame(rows, columns=TRIAL_COLUMNS)).iloc[0]
    assert (row["n_units"], row["gain_total"], row["share_from_split"]) == (100, 1.0, 1.0)


def test_an_unknown_idk_gain_design_is_refused_by_name(study):
    with pytest.raises(ReportInputError, match=r"^unknown design 'sideways' \(use auto, within or between\)$"):
        idk_gain(study, design="sideways")
