"""The CLI end to end: files written, and bad input writes nothing."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from evaluator.report.__main__ import main

ROOT = Path(__file__).resolve().parents[3]
TABLES = ["table2.csv", "table2_ci.csv", "consistency.csv", "per_class.csv", "report.html"]


def test_the_cli_writes_tables_html_and_static_figures(study_csv, tmp_path, expected_table2):
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"title": "Pets pilot", "dataset": "Oxford-IIIT Pets",
                                "models": [{"name": "clip", "fingerprint": "sha256:1234"}]}))
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "evaluator.report", str(study_csv), "--out", str(out),
                           "--bootstrap", "200", "--meta", str(meta)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for name in TABLES:
        assert (out / name).stat().st_size > 0, name
    written = pd.read_csv(out / "table2.csv", keep_default_na=False)
    pd.testing.assert_frame_equal(written, expected_table2("macro"), check_exact=False, rtol=0, atol=1e-9)
    consistency = pd.read_csv(out / "consistency.csv")
    assert list(consistency.columns[:4]) == ["condition", "pair_kind", "error_consistency", "n_pairs"]
    assert set(consistency["pair_kind"]) == {"human-human", "noise-ceiling", "human-model:clip",
                                             "human-model:abstainer"}
    assert set(consistency["idk"]) == {"error", "dropped"} and (consistency["n_resamples"] == 200).all()
    ci = pd.read_csv(out / "table2_ci.csv")
    assert len(ci) == 6 * 4 and (ci["n_resamples"] == 200).all()
    assert set(ci.loc[ci["subject_kind"] == "human", "resample"]) == {"two-way"}
    assert (out / "differences.csv").stat().st_size > 0
    assert not (out / "replication.csv").exists()  # no reference given, and META names no benchmark
    pngs = sorted((out / "figures").glob("*.png"))
    assert {p.stem for p in pngs} >= {"table2", "per_class", "consistency", "response_times", "calibration",
                                      "confusion_human_zero-shot", "confusion_model_clip_one-shot"}
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
        assert png.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
    page = (out / "report.html").read_text()
    assert "Pets pilot" in page and "sha256:1234" in page
    assert "5 human participant(s), 35 answers; 2 model(s), 15 answers" in page


def test_the_cli_single_model_table2_has_exactly_the_paper_columns(study_csv, tmp_path):
    trials = pd.read_csv(study_csv, dtype=str, keep_default_na=False)
    one_model = tmp_path / "one_model.csv"
    trials[trials["subject"] != "abstainer"].to_csv(one_model, index=False)
    assert main([str(one_model), "--out", str(tmp_path / "out"), "--bootstrap", "50", "--no-static"]) == 0
    written = pd.read_csv(tmp_path / "out" / "table2.csv")
    assert list(written.columns) == ["subject_kind", "condition", "accuracy", "majority_vote_full",
                                     "accuracy_on_guesses", "majority_vote_on_guesses"]
    assert not (tmp_path / "out" / "figures").exists()


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.drop(columns="target"), "missing required column(s): target"),
    (lambda t: t.assign(condition=t["condition"].replace("two-shot", "few-shot")), "unknown condition"),
    (lambda t: t.assign(target=t["target"].replace("C", "idk")), "class literally named 'idk'"),
])
def test_bad_input_exits_2_with_a_clear_message_and_writes_nothing(study_csv, tmp_path, capsys, change, message):
    bad = tmp_path / "bad.csv"
    change(pd.read_csv(study_csv, dtype=str, keep_default_na=False)).to_csv(bad, index=False)
    out = tmp_path / "out"
    assert main([str(bad), "--out", str(out), "--bootstrap", "10", "--no-static"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not out.exists()


def test_reference_sets_a_published_table_beside_ours_in_replication_csv(study_csv, tmp_path):
    reference = tmp_path / "published.csv"
    reference.write_text("subject_kind,condition,accuracy,majority_vote_full,accuracy_on_guesses,"
                         "majority_vote_on_guesses\nhuman,zero-shot,20,0,40,30\nmodel,zero-shot,70,70,70,70\n")
    out = tmp_path / "out"
    assert main([str(study_csv), "--out", str(out), "--bootstrap", "100", "--reference", str(reference),
                 "--resample", "items", "--no-static"]) == 0
    table = pd.read_csv(out / "replication.csv", keep_default_na=False)
    human = table[(table["subject_kind"] == "human") & (table["metric"] == "accuracy")].iloc[0]
    assert human["reference"] == 20 and human["ours"] == pytest.approx(700 / 30, abs=1e-9)
    assert human["difference"] == pytest.approx(700 / 30 - 20, abs=1e-9)
    models = table[table["subject_kind"] == "model"]
    assert set(models["subject"]) == {"clip", "abstainer"}  # the published model row beside each of ours
    assert "Replication: the published Table 2" in (out / "report.html").read_text()


def test_a_reference_of_the_wrong_shape_is_an_input_error(study_csv, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("subject_kind,condition,accuracy\nhuman,zero-shot,20\n")
    assert main([str(study_csv), "--out", str(tmp_path / "out"), "--reference", str(bad), "--no-static"]) == 2
    assert "majority_vote_full" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_older_resample_units_still_work(study_csv, tmp_path):
    for unit in ("items", "participants"):
        assert main([str(study_csv), "--out", str(tmp_path / unit), "--bootstrap", "30", "--resample", unit,
                     "--no-static"]) == 0
        assert set(pd.read_csv(tmp_path / unit / "table2_ci.csv")["resample"]) == {unit}


def test_a_missing_file_and_bad_meta_are_input_errors(study_csv, tmp_path, capsys):
    assert main([str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o1"), "--no-static"]) == 2
    meta = tmp_path / "meta.json"
    meta.write_text("[1, 2]")
    assert main([str(study_csv), "--out", str(tmp_path / "o2"), "--meta", str(meta), "--no-static"]) == 2
    assert "JSON object" in capsys.readouterr().err
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_a_missing_browser_fails_clearly_before_writing_anything(study_csv, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-such-chromium"))
    assert main([str(study_csv), "--out", str(tmp_path / "out"), "--bootstrap", "10"]) == 1
    assert "--no-static" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
