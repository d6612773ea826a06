"""Django side of the reports: the study's long trial table (humans and models alike) and its header."""

from pathlib import Path

import pandas as pd

from evaluator.models import ModelRun
from evaluator.report import ReportOptions, ReportResult, build_report, compute_report
from evaluator.selectors import model_runs_for_study, model_trials
from studyapp.models import Study
from studyapp.selectors.trials import TRIAL_COLUMNS, human_trials

MODEL_COLUMNS = ["p_target", "p_response"]


def study_trials(*, study: Study) -> pd.DataFrame:
    """Every answer of every human and every finished model run, one row each."""
    rows = human_trials(study=study) + model_trials(study=study)
    frame = pd.DataFrame(rows, columns=TRIAL_COLUMNS + MODEL_COLUMNS)
    # Models are never simulated or attention-failed; booleans must stay booleans for the CSV.
    for column in ("simulated", "attention_failed"):
        frame[column] = frame[column].fillna(False).astype(bool)
    return frame


def study_report_meta(*, study: Study) -> dict:
    runs = model_runs_for_study(study=study, statuses=(ModelRun.Status.DONE,))
    return {
        "title": f"{study.title} — report",
        "dataset": f"{study.dataset.name}: {study.dataset.classes.count()} classes, "
                   f"{study.study_items.count()} test items (split {study.test_split!r}); "
                   f"shots from split {study.shot_split!r}, seed {study.seed}",
        "models": [
            f"{run.name} — fingerprint {run.fingerprint or '?'}; few-shot method {run.fewshot_method}; "
            f"{len(run.templates)} prompt template(s); device {run.device or '?'} {run.dtype}"
            for run in runs
        ] or ["no finished model run yet"],
        "templates": sorted({t for run in runs for t in run.templates}),
        "design": f"{study.get_design_display()}; k = {study.k_per_item} answers per item and condition; "
                  f"\"I don't know\" {'allowed' if study.allow_idk else 'not offered'}",
    }


def study_report_compute(*, study: Study, options: ReportOptions) -> ReportResult:
    return compute_report(study_trials(study=study), meta=study_report_meta(study=study), options=options)


def study_report_write(*, study: Study, out_dir: Path, options: ReportOptions) -> ReportResult:
    return build_report(study_trials(study=study), out_dir=out_dir, meta=study_report_meta(study=study),
                        options=options)
