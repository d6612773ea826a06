"""Names from imported data are escaped in the HTML report, the one staff page whose CSP allows inline script.

Class names come from folder names or manifests of datasets found anywhere; subject names from
model runs. A name with markup must stay text in report.html, or opening a report would run it.
"""

from pathlib import Path

import pandas as pd

from evaluator.report.__main__ import main

FIXTURE = Path(__file__).resolve().parents[1] / "evaluator" / "report" / "fixtures" / "study_trials.csv"

MARKUP = "<img src=x onerror=alert(1)>"
SCRIPT = "<script>alert(2)</script>"


def test_class_and_subject_names_with_markup_stay_text_in_the_html_report(tmp_path):
    trials = pd.read_csv(FIXTURE, dtype=str, keep_default_na=False)
    trials[["target", "response"]] = trials[["target", "response"]].replace("A", MARKUP)
    trials["subject"] = trials["subject"].replace("clip", SCRIPT)
    path = tmp_path / "trials.csv"
    trials.to_csv(path, index=False)
    assert main([str(path), "--out", str(tmp_path / "out"), "--bootstrap", "10", "--no-static"]) == 0
    html = (tmp_path / "out" / "report.html").read_text()
    assert MARKUP not in html and SCRIPT not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
