"""The optional probabilities table: accepted when it matches the trials, refused with a clear message otherwise,
and the CLI's --probabilities end to end (bad input writes nothing)."""

import numpy as np
import pandas as pd
import pytest

from evaluator.report import (
    PROBABILITY_TABLE_COLUMNS,
    ReportInputError,
    ReportOptions,
    compute_tables,
    encode,
    prepare_trials,
    read_probabilities_csv,
    validate_probabilities,
)
from evaluator.report.__main__ import main


def clip_vectors(study: pd.DataFrame) -> pd.DataFrame:
    """Vectors over A, B, C for CLIP's answers in the fixture, agreeing with its p_target and p_response."""
    rows = []
    clip = study[study["subject"] == "clip"]
    for r in clip.itertuples():
        p = {c: 0.0 for c in "ABC"}
        p[r.response] = float(r.p_response)
        if r.response != r.target:
            p[r.target] = float(r.p_target)
        rest = 1.0 - sum(p.values())
        free = [c for c in "ABC" if c not in (r.response, r.target)]
        for c in free:
            p[c] = rest / len(free)
        rows += [(r.subject, r.condition, r.item, c, v) for c, v in p.items()]
    return pd.DataFrame(rows, columns=list(PROBABILITY_TABLE_COLUMNS))


def test_vectors_that_match_the_trials_become_one_matrix_per_model_row(study):
    enc = encode(prepare_trials(study))
    vectors = validate_probabilities(clip_vectors(study), enc)
    assert list(vectors.classes) == ["A", "B", "C"]
    assert len(vectors.vectors) == 2  # clip zero-shot and one-shot
    for items, matrix in vectors.vectors.values():
        assert matrix.shape == (5, 3) and np.allclose(matrix.sum(axis=1), 1.0)
        assert len(set(items)) == 5
    assert not validate_probabilities(None, enc)
    assert not validate_probabilities(pd.DataFrame(columns=list(PROBABILITY_TABLE_COLUMNS)), enc)


def test_rounded_vectors_are_renormalised(study):
    enc = encode(prepare_trials(study))
    rounded = clip_vectors(study).assign(p=lambda t: t["p"].round(4))
    for _, matrix in validate_probabilities(rounded, enc).vectors.values():
        assert np.allclose(matrix.sum(axis=1), 1.0, atol=1e-12)


def bad(change):
    def apply(table: pd.DataFrame) -> pd.DataFrame:
        return change(table.copy())
    return apply


def set_first(column, value):
    def change(t):
        t[column] = t[column].astype(object)
        t.loc[t.index[0], column] = value
        return t
    return change


def swap_classes(t):
    """A class-order mix-up on the exporting side: A and B exchanged."""
    t["class"] = t["class"].map({"A": "B", "B": "A", "C": "C"})
    return t


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.drop(columns="p"), "missing column(s): p"),
    (set_first("p", 1.5), "must be a number in [0, 1]"),
    (set_first("p", "x"), "must be a number in [0, 1]"),
    (set_first("subject", "h1"), "which is a human participant"),
    (set_first("subject", "nobody"), "no model answers in that condition"),
    (set_first("condition", "few-shot"), "unknown condition"),
    (set_first("item", "zz"), "item 'zz' is not in the trial table"),
    (set_first("class", "idk"), "class literally named 'idk'"),
    (lambda t: t.iloc[1:], "lacks class(es)"),
    (lambda t: pd.concat([t, t.iloc[:1]]), "repeated row(s)"),
    (lambda t: t.assign(p=t["p"] * 1.05), "not 1"),
    (swap_classes, "are the classes in the right order?"),
])
def test_bad_probabilities_are_refused_with_a_clear_message(study, change, message):
    enc = encode(prepare_trials(study))
    with pytest.raises(ReportInputError, match=None) as error:
        validate_probabilities(bad(change)(clip_vectors(study)), enc)
    assert message in str(error.value)


def test_a_vector_whose_top_class_is_not_the_models_answer_is_refused(study):
    enc = encode(prepare_trials(study.drop(columns=["p_target"])))  # without p_target, the argmax check catches it
    with pytest.raises(ReportInputError, match="not its most probable class"):
        validate_probabilities(swap_classes(clip_vectors(study)), enc)


def test_a_vector_for_an_excluded_or_missing_answer_is_refused(study):
    enc = encode(prepare_trials(study))
    extra = pd.DataFrame({"subject": "clip", "condition": "two-shot", "item": "a1", "class": list("ABC"),
                          "p": [0.5, 0.25, 0.25]})
    with pytest.raises(ReportInputError, match="no model answers in that condition"):
        validate_probabilities(pd.concat([clip_vectors(study), extra]), enc)


def test_compute_tables_accepts_the_probabilities_and_counts_the_vectors(study):
    tables, counts = compute_tables(study, options=ReportOptions(bootstrap=20), probabilities=clip_vectors(study))
    assert counts["n_probability_vectors"] == 10
    assert {"cross_entropy", "kl_divergence"} <= set(tables["alignment"]["quantity"])
    assert set(tables["combination"]["model_input"]) == {"probabilities"}
    tables, counts = compute_tables(study, options=ReportOptions(bootstrap=20, beyond_paper=False))
    assert "alignment" not in tables and counts["n_probability_vectors"] == 0


def test_the_cli_reads_probabilities_and_writes_the_new_tables(study, study_csv, tmp_path):
    path = tmp_path / "probabilities.csv"
    clip_vectors(study).to_csv(path, index=False)
    out = tmp_path / "out"
    assert main([str(study_csv), "--out", str(out), "--bootstrap", "50", "--no-static", "--probabilities", str(path),
                 "--combination-folds", "3"]) == 0
    for name in ("risk_coverage.csv", "risk_coverage_curve.csv", "soft_labels.csv", "alignment.csv",
                 "combination.csv"):
        assert (out / name).stat().st_size > 0, name
    alignment = pd.read_csv(out / "alignment.csv")
    assert {"cross_entropy", "kl_divergence", "spearman_items"} <= set(alignment["quantity"])
    assert (pd.read_csv(out / "combination.csv")["folds"] == 3).all()
    page = (out / "report.html").read_text()
    assert "risk-coverage" in page and "People and model together" in page and "10 (model × condition × item)" in page
    assert read_probabilities_csv(path).shape == (30, 5)


def test_the_cli_refuses_bad_probabilities_and_writes_nothing(study, study_csv, tmp_path, capsys):
    path = tmp_path / "probabilities.csv"
    swap_classes(clip_vectors(study)).to_csv(path, index=False)
    out = tmp_path / "out"
    assert main([str(study_csv), "--out", str(out), "--bootstrap", "10", "--no-static", "--probabilities", str(path)]) == 2
    assert "right order" in capsys.readouterr().err
    assert not out.exists()
    assert main([str(study_csv), "--out", str(out), "--no-static", "--probabilities", str(tmp_path / "none.csv")]) == 2
    assert not out.exists()


def test_the_cli_can_skip_the_analyses_beyond_the_paper(study_csv, tmp_path):
    out = tmp_path / "out"
    assert main([str(study_csv), "--out", str(out), "--bootstrap", "10", "--no-static", "--no-beyond-paper"]) == 0
    assert not (out / "risk_coverage.csv").exists() and (out / "table2.csv").exists()
