"""The models' whole probability vectors as the report's second input (docs/reports.md, "Second input").

One row per model subject x condition x item x class: ``subject, condition, item, class, p``, for exactly the
model answers of the trial table (`evaluator.selectors.model_trials`: the study's finished runs, items with an
answer). Built from arrays, not from a dict per row: a full Oxford Pets study gives 37 classes x 3,700 items
per model row, ~400,000 rows per few-shot method.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from evaluator.models import ModelPrediction, ModelRun
from evaluator.report import ReportInputError
from evaluator.selectors import model_runs_for_study
from studyapp.models import Condition, Study, StudyItem

PROBABILITY_COLUMNS = ["subject", "condition", "item", "class", "p"]


def model_probability_table(*, study: Study, runs: list[ModelRun] | None = None) -> pd.DataFrame:
    """The probability vectors of the model answers `model_trials(study=study, runs=runs)` lists.

    ``ModelPrediction.probs`` holds one probability per class in ``ClassLabel.index`` order of the study's
    dataset (scoring checks the indices are 0..C-1); a vector of another length is refused rather than
    matched to the wrong classes.
    """
    if runs is None:
        runs = model_runs_for_study(study=study, statuses=(ModelRun.Status.DONE,))
    class_names = np.array(study.dataset.classes.order_by("index").values_list("name", flat=True), dtype=object)
    condition_names = {c.pk: c.name for c in Condition.objects.filter(study=study)}
    rows = list(
        ModelPrediction.objects.filter(run__in=runs, predicted__isnull=False)
        .order_by("run__created_at", "method", "condition__shots", "item_id")
        .values_list("run_id", "method", "condition_id", "item_id", "probs")
    )
    # Item codes once per item, not once per prediction (a UUID per row was a third of the time).
    codes = {pk: str(code) for pk, code in StudyItem.objects.filter(study=study).values_list("item_id", "item__code")}
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=float if c == "p" else object) for c in PROBABILITY_COLUMNS})
    by_pk = {run.pk: run for run in runs}
    n_classes = len(class_names)
    wrong = next((r for r in rows if len(r[4]) != n_classes), None)
    if wrong is not None:
        raise ReportInputError(f"model run {by_pk[wrong[0]].name!r}: item {codes.get(wrong[3])} has {len(wrong[4])} "
                               f"probabilities for the dataset's {n_classes} classes")
    run_ids, methods, condition_ids, item_ids, probs = zip(*rows, strict=True)
    # Subjects are named once per (run, method), not once per row.
    subjects = {key: by_pk[key[0]].subject(key[1]) for key in set(zip(run_ids, methods, strict=True))}
    subject = np.array([subjects[key] for key in zip(run_ids, methods, strict=True)], dtype=object)
    condition = np.array([condition_names[c] for c in condition_ids], dtype=object)
    item = np.array([codes[pk] for pk in item_ids], dtype=object)
    return pd.DataFrame({
        "subject": np.repeat(subject, n_classes),
        "condition": np.repeat(condition, n_classes),
        "item": np.repeat(item, n_classes),
        "class": np.tile(class_names, len(rows)),
        "p": np.asarray(probs, dtype=float).ravel(),
    })
