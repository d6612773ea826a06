"""Malformed trial tables at the report CLI: exit 2 with a one-line reason, and an earlier report left untouched.

tests/evaluator/report covers a dropped column, one unknown condition name, a class called idk, a
missing file and bad META; this corpus covers files that are not CSV at all, encodings, other
spellings of conditions and kinds, impossible numbers, and that a failed run never touches the
report already in the output folder (the "stored data" of the CLI).
"""

import hashlib
import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from evaluator.report.__main__ import main

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "evaluator" / "report" / "fixtures" / "study_trials.csv"


@pytest.fixture
def trials() -> pd.DataFrame:
    return pd.read_csv(FIXTURE, dtype=str, keep_default_na=False)


@pytest.fixture
def earlier_report(tmp_path) -> Path:
    """An output folder holding a good report from before."""
    out = tmp_path / "report"
    assert main([str(FIXTURE), "--out", str(out), "--bootstrap", "10", "--no-static"]) == 0
    return out


def fingerprint(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_bad(path: Path, out: Path, capsys) -> str:
    before = fingerprint(out)
    rows_before = len(pd.read_csv(out / "table2.csv"))
    assert main([str(path), "--out", str(out), "--bootstrap", "10", "--no-static"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert fingerprint(out) == before and len(pd.read_csv(out / "table2.csv")) == rows_before
    return err


def raw_file(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(("content", "message"), [
    (b"", "No columns to parse"),
    (random.Random(0).randbytes(4096), "cannot read"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + random.Random(1).randbytes(2000), "cannot read"),  # someone passed an image
    ("subject,subject_kind\n".encode("utf-16"), "cannot read"),
    (b"just one line of text without the columns\n", "missing required column(s)"),
    (b"subject;subject_kind;condition;item;target;response;rt_ms\nh1;human;zero-shot;a;A;A;1\n",
     "missing required column(s)"),
], ids=["zero-bytes", "random-bytes", "a-jpeg", "utf-16", "plain-text", "semicolons"])
def test_a_file_that_is_not_a_trial_csv_is_refused(tmp_path, earlier_report, capsys, content, message):
    assert message in run_bad(raw_file(tmp_path, content), earlier_report, capsys)


def test_a_csv_with_only_a_header_is_refused(tmp_path, earlier_report, capsys, trials):
    path = tmp_path / "header.csv"
    trials.head(0).to_csv(path, index=False)
    assert "trial table is empty" in run_bad(path, earlier_report, capsys)


def test_a_latin_1_csv_is_refused_with_the_encoding_named(tmp_path, earlier_report, capsys, trials):
    path = tmp_path / "latin1.csv"
    trials.assign(target=trials["target"] + "é", response=trials["response"].where(
        trials["response"] == "idk", trials["response"] + "é")).to_csv(path, index=False, encoding="latin-1")
    assert "utf-8" in run_bad(path, earlier_report, capsys)


@pytest.mark.parametrize(("column", "value", "message"), [
    ("condition", "zero shot", "unknown condition"),
    ("condition", "0-shot", "unknown condition"),
    ("condition", "three-shot", "unknown condition"),
    ("condition", "", "column 'condition' has empty values"),
    ("subject_kind", "robot", "unknown subject_kind"),
    ("rt_ms", "fast", "column 'rt_ms' must be numeric"),
    ("rt_ms", "-250", "column 'rt_ms' must be a finite number of milliseconds"),
    ("rt_ms", "inf", "column 'rt_ms' must be a finite number of milliseconds"),
    ("simulated", "maybe", "column 'simulated' must be true/false"),
    ("p_target", "1.5", "must be a probability"),
    ("p_target", "nan", "column 'p_target' must be numeric"),
], ids=lambda v: str(v) or "blank")
def test_an_impossible_value_in_one_row_is_refused_and_the_row_named(tmp_path, earlier_report, capsys, trials,
                                                                    column, value, message):
    bad = trials.copy()
    row = bad.index[bad["subject_kind"] == "model"][0] if column.startswith("p_") else 0
    bad.loc[row, column] = value
    path = tmp_path / "bad.csv"
    bad.to_csv(path, index=False)
    err = run_bad(path, earlier_report, capsys)
    assert message in err
    if "unknown" not in message:
        assert f"data rows {row + 1}" in err


def test_every_row_with_an_infinite_time_is_an_input_error_not_a_crash(tmp_path, earlier_report, capsys, trials):
    # Once, a table whose every rt_ms was "inf" crashed the response-time summary with a traceback.
    path = tmp_path / "inf.csv"
    trials.assign(rt_ms="inf").to_csv(path, index=False)
    assert "column 'rt_ms' must be a finite number" in run_bad(path, earlier_report, capsys)


def test_a_directory_instead_of_a_file_is_refused(tmp_path, earlier_report, capsys):
    assert "trial file not found" in run_bad(tmp_path, earlier_report, capsys)


def test_the_cli_as_a_process_exits_2_without_a_traceback(tmp_path, trials):
    path = tmp_path / "bad.csv"
    trials.assign(condition="few-shot").to_csv(path, index=False)
    done = subprocess.run([sys.executable, "-m", "evaluator.report", str(path), "--out", str(tmp_path / "out"),
                           "--no-static"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("error: unknown condition") and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
