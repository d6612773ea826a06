"""Table 2 on a hand-computed fixture (fixtures/study_trials.csv).

The expected tables (fixtures/study_table2_macro.csv, study_table2_micro.csv) were worked
out on paper from the trials and typed in as fractions; every column is compared to 1e-9.

How the macro values come about (h4 simulated and h5 attention-failed are excluded):
- zero-shot humans h1-h3: class A 6 answers, 3 right -> 1/2, guesses 3/4; B 5 answers,
  1 right -> 1/5, guesses 1/2; C only idk -> 0, no guesses (left out). Votes: a1 3-way
  tie, a2 A, b1 idk majority, b2 C/idk tie, c1 all idk -> full: A 1/2, B 0, C 0;
  guesses: A 1/2 (a1 A/B tie), B 1/2 (b1), C 0 (no guess). Accuracy (1/2 + 1/5 + 0)/3 = 7/30.
- one-shot: A 5/6; B 3/5, guesses 3/4; C 1/3, guesses 1. Votes: a1, a2, b1 right; b2 B/C
  tie; c1 idk 2 vs C 1 (full wrong, on guesses right) -> 1/2 and (1 + 1/2 + 1)/3 = 5/6.
- two-shot (h6, h7; a2 has one answer, b2 none): A 2/3, B 1/2, C 1 -> 13/18; votes a1
  right, a2 wrong, b1 tie, c1 right -> A 1/2, B 0, C 1 -> 1/2.
- abstainer: a1 idk, a2 right, b1 right, b2 idk, c1 wrong -> A 1/2, B 1/2, C 0 = 1/3; on
  guesses A 1, B 1, C 0 = 2/3; its votes equal its answers (idk = wrong) -> 1/3.
- clip zero-shot: only a2 wrong -> (1/2 + 1 + 1)/3 = 5/6; one-shot: only c1 wrong -> 2/3.
"""

from fractions import Fraction as F

import pandas as pd
import pytest

from evaluator.report import confusion, per_class, prepare_trials, table2

COLUMNS = ["subject_kind", "condition", "accuracy", "majority_vote_full", "accuracy_on_guesses",
           "majority_vote_on_guesses"]


def assert_table(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(actual.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(actual.reset_index(drop=True), expected.reset_index(drop=True), check_exact=False,
                                  rtol=0, atol=1e-9, check_dtype=False)

def test_macro_table2_matches_the_hand_computed_values_in_every_cell(study, expected_table2):
    assert_table(table2(study), expected_table2("macro"))


def test_micro_average_gives_plain_accuracy_over_answers_and_items(study, expected_table2):
    assert_table(table2(study, average="micro"), expected_table2("micro"))


def test_a_single_model_gives_exactly_the_six_table2_columns(study, expected_table2):
    result = table2(study[study["subject"] != "abstainer"])
    expected = expected_table2("macro")
    expected = expected[expected["subject"] != "abstainer"].drop(columns="subject")
    assert list(result.columns) == COLUMNS
    assert_table(result, expected)


def test_a_model_that_never_abstains_has_four_equal_values(study):
    row = table2(study).iloc[4]
    assert row["subject"] == "clip"
    assert len({round(row[c], 12) for c in COLUMNS[2:]}) == 1


def test_simulated_participants_are_excluded_unless_asked(study):
    default = table2(study).iloc[0]["accuracy"]
    included = table2(prepare_trials(study, include_simulated=True)).iloc[0]["accuracy"]
    # With simulated h4 (all right): A 5/8, B 3/7, C 1/4.
    assert default == pytest.approx(700 / 30, abs=1e-9)
    assert included == pytest.approx(float((F(5, 8) + F(3, 7) + F(1, 4)) / 3) * 100, abs=1e-9)


def test_attention_failed_participants_are_excluded_unless_asked(study):
    included = table2(prepare_trials(study, include_attention_failed=True), average="micro").iloc[0]
    # h5 answers all five zero-shot items wrongly: 4 right of 19 answers.
    assert included["accuracy"] == pytest.approx(400 / 19, abs=1e-9)


def test_per_class_rows_hold_the_hand_computed_class_values(study):
    table = per_class(study).set_index(["subject_kind", "subject", "condition", "class"]).sort_index()
    zero = table.loc[("human", "", "zero-shot")]
    assert zero.loc["A", "accuracy"] == pytest.approx(50.0, abs=1e-9)
    assert zero.loc["B", "accuracy"] == pytest.approx(20.0, abs=1e-9)
    assert zero.loc["C", "accuracy"] == pytest.approx(0.0, abs=1e-9)
    assert pd.isna(zero.loc["C", "accuracy_on_guesses"])  # a class with only idk answers has no guesses
    assert zero.loc["B", "majority_vote_on_guesses"] == pytest.approx(50.0, abs=1e-9)
    assert list(zero["n_answers"]) == [6, 5, 3]
    clip = table.loc[("model", "clip", "zero-shot")]
    assert list(clip["mean_p_target"]) == pytest.approx([0.6, 0.79, 0.95], abs=1e-12)


@pytest.mark.parametrize("part", ["humans only", "models only", "one condition", "no model probabilities"])
def test_a_report_is_computed_for_partial_studies(study, part):
    from evaluator.report import ReportOptions, compute_report

    subset = {
        "humans only": study[study["subject_kind"] == "human"],
        "models only": study[study["subject_kind"] == "model"],
        "one condition": study[study["condition"] == "two-shot"],
        "no model probabilities": study.drop(columns=["p_target", "p_response"]),
    }[part]
    result = compute_report(subset, options=ReportOptions(bootstrap=20))
    assert len(result.tables["table2_ci"]) == 4 * len(result.tables["table2"])
    assert "table2" in result.figures and result.html.startswith("<!DOCTYPE html>")


def test_the_confusion_counts_are_the_hand_counts_of_each_table2_row(study):
    table = confusion(study)
    assert list(table.columns) == ["subject_kind", "subject", "condition", "target", "response", "count"]
    counts = {tuple(row[:-1]): row[-1] for row in table.itertuples(index=False)}
    zero_shot_humans = {key[3:]: n for key, n in counts.items() if key[:3] == ("human", "", "zero-shot")}
    # h1-h3 (h4 simulated and h5 attention-failed are left out): class A 3 right, 1 B, 2 idk; B 1 right, 1 C,
    # 3 idk; C only idk.
    assert zero_shot_humans == {("A", "A"): 3, ("A", "B"): 1, ("A", "idk"): 2, ("B", "B"): 1, ("B", "C"): 1,
                                ("B", "idk"): 3, ("C", "idk"): 3}
    abstainer = {key[3:]: n for key, n in counts.items() if key[:3] == ("model", "abstainer", "zero-shot")}
    assert abstainer == {("A", "A"): 1, ("A", "idk"): 1, ("B", "B"): 1, ("B", "idk"): 1, ("C", "A"): 1}
    # Every answer is counted once: 60 trials less h4's and h5's 10.
    assert sum(counts.values()) == 50


def test_an_answer_that_is_no_target_class_is_counted_under_its_own_name(study):
    renamed = study.copy()
    renamed.loc[(renamed["subject"] == "h1") & (renamed["item"] == "b2") & (renamed["condition"] == "zero-shot"),
                "response"] = "D"
    table = confusion(renamed)
    zero = table[(table["subject_kind"] == "human") & (table["condition"] == "zero-shot")]
    assert zero.loc[zero["target"] == "B", ["response", "count"]].values.tolist() == [["B", 1], ["D", 1], ["idk", 3]]


def test_per_class_reports_the_models_mean_probability_of_the_true_class_and_nothing_for_humans(study):
    humans_with_a_probability = study.assign(p_target=study["p_target"].fillna(0.5))  # no model has one for people
    table = per_class(humans_with_a_probability)
    assert list(table.columns) == ["subject_kind", "subject", "condition", "class", "n_items", "n_answers",
                                   "n_guesses", "accuracy", "majority_vote_full", "accuracy_on_guesses",
                                   "majority_vote_on_guesses", "mean_p_target"]
    clip = table[(table["subject"] == "clip") & (table["condition"] == "zero-shot")].set_index("class")
    # a1 0.9, a2 0.3 | b1 0.88, b2 0.7 | c1 0.95
    assert clip["mean_p_target"].tolist() == pytest.approx([0.6, 0.79, 0.95], abs=1e-12)
    assert table.loc[table["subject_kind"] == "human", "mean_p_target"].isna().all()
    without = per_class(study.drop(columns=["p_target", "p_response"]))
    assert without["mean_p_target"].dtype == float and without["mean_p_target"].isna().all()


def model_trials(answers: dict[tuple[str, str], list[bool]]) -> pd.DataFrame:
    """Trials of model subjects: {(subject, condition): right or wrong per item}, items of two classes."""
    rows = []
    for (subject, condition), rights in answers.items():
        for i, right in enumerate(rights):
            target = "a" if i % 2 == 0 else "b"
            rows.append({"subject": subject, "subject_kind": "model", "condition": condition, "item": f"i{i}",
                         "target": target, "response": target if right else ("b" if target == "a" else "a"),
                         "rt_ms": 0.0})
    return pd.DataFrame(rows)


def test_three_models_in_two_conditions_keep_six_rows_with_their_own_values():
    # More model subjects than conditions is where a (subject, condition) code could collide.
    answers = {(m, c): [k < n for k in range(4)]
               for n, (m, c) in enumerate((m, c) for m in ("m0", "m1", "m2") for c in ("zero-shot", "one-shot"))}
    result = table2(model_trials(answers))
    assert len(result) == 6
    for (subject, condition), rights in answers.items():
        row = result[(result["subject"] == subject) & (result["condition"] == condition)]
        assert len(row) == 1
        # Two classes of two items each: the mean per-class accuracy of these answers.
        per_class = [sum(rights[0::2]) / 2, sum(rights[1::2]) / 2]
        assert row["accuracy"].iloc[0] == pytest.approx(100 * sum(per_class) / 2)


def test_rows_follow_the_paper_order_of_conditions_whatever_order_the_trials_come_in():
    answers = {("m0", "two-shot"): [True] * 4, ("m0", "one-shot"): [True] * 4, ("m0", "zero-shot"): [False] * 4}
    assert list(table2(model_trials(answers))["condition"]) == ["zero-shot", "one-shot", "two-shot"]
