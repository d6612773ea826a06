"""Bad trial tables fail with a ReportInputError that says what is wrong."""

import pandas as pd
import pytest

from evaluator.report import ReportInputError, prepare_trials, table2, validate_trials


def good_rows():
    return pd.DataFrame({
        "subject": ["h1", "h1", "m"], "subject_kind": ["human", "human", "model"],
        "condition": ["zero-shot", "zero-shot", "zero-shot"], "item": ["i1", "i2", "i1"],
        "target": ["cat", "dog", "cat"], "response": ["cat", "IDK", "dog"], "rt_ms": [900, 1200, None],
    })


def test_a_valid_table_is_normalised_with_flags_defaulting_to_false():
    table = validate_trials(good_rows())
    assert list(table["response"]) == ["cat", "idk", "dog"]
    assert not table["simulated"].any() and not table["attention_failed"].any()


@pytest.mark.parametrize("column", ["subject", "subject_kind", "condition", "item", "target", "response", "rt_ms"])
def test_a_missing_column_is_named_in_the_error(column):
    with pytest.raises(ReportInputError, match=f"missing required column.*{column}"):
        table2(good_rows().drop(columns=column))


def test_an_unknown_condition_is_rejected():
    rows = good_rows().assign(condition=["zero-shot", "three-shot", "zero-shot"])
    with pytest.raises(ReportInputError, match="unknown condition.*three-shot"):
        table2(rows)


def test_an_unknown_subject_kind_is_rejected():
    rows = good_rows().assign(subject_kind=["human", "robot", "model"])
    with pytest.raises(ReportInputError, match="unknown subject_kind.*robot"):
        table2(rows)


def test_an_empty_table_is_rejected():
    with pytest.raises(ReportInputError, match="empty"):
        table2(good_rows().iloc[0:0])


def test_a_class_literally_named_idk_is_rejected():
    rows = good_rows().assign(target=["cat", "idk", "cat"])
    with pytest.raises(ReportInputError, match="class literally named 'idk'"):
        table2(rows)


def test_an_item_with_two_targets_is_rejected():
    rows = good_rows().assign(target=["cat", "dog", "dog"])
    with pytest.raises(ReportInputError, match="more than one target"):
        table2(rows)


def test_a_repeated_answer_by_the_same_subject_is_rejected():
    rows = pd.concat([good_rows(), good_rows().iloc[[0]]], ignore_index=True)
    with pytest.raises(ReportInputError, match="answered item 'i1' more than once"):
        table2(rows)


def test_empty_cells_and_non_numeric_times_are_rejected_with_row_numbers():
    with pytest.raises(ReportInputError, match=r"'response' has empty values \(data rows 2\)"):
        table2(good_rows().assign(response=["cat", " ", "dog"]))
    with pytest.raises(ReportInputError, match="'rt_ms' must be numeric"):
        table2(good_rows().assign(rt_ms=["900", "slow", ""]))


def test_probabilities_outside_zero_to_one_are_rejected():
    with pytest.raises(ReportInputError, match="p_target"):
        table2(good_rows().assign(p_target=[None, None, 1.5]))


def test_excluding_everyone_is_an_error_not_an_empty_report():
    with pytest.raises(ReportInputError, match="no trials left"):
        prepare_trials(good_rows().assign(simulated=True))


def test_an_unknown_average_is_rejected(study):
    with pytest.raises(ReportInputError, match="unknown average"):
        table2(study, average="weighted")
