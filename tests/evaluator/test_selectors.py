"""evaluator.selectors: model answers as trials in the shared long schema, and a run's progress."""

import pytest

from clipmodel.fewshot import DEFAULT_C, DEFAULT_PRIOR_LAMBDA
from evaluator.models import ModelPrediction
from evaluator.selectors import model_run_progress, model_trials
from evaluator.services.chunks import model_run_score_chunk
from studyapp.models import StudyItem
from studyapp.services.images import image_path
from tests.evaluator.helpers import create_run, score_all
from tests.factories import make_study

pytestmark = pytest.mark.django_db


def test_model_trials_gives_one_row_per_answer_in_the_shared_trial_schema(tiny_checkpoint):
    study = make_study()
    broken = StudyItem.objects.filter(study=study).first().item
    image_path(relative_path=broken.image).write_bytes(b"garbage")
    run = create_run(study, tiny_checkpoint)
    score_all(run)
    unfinished = create_run(study, tiny_checkpoint, name="unfinished")

    rows = model_trials(study=study)

    assert len(rows) == run.items_total - 5  # the corrupt item has no answer in any condition or method
    # One subject in zero-shot, one per few-shot method in the one- and two-shot conditions.
    probe = f"{run.name} · linear probe (paper, C={DEFAULT_C:g})"
    prior = f"{run.name} · zero-shot prior (λ={DEFAULT_PRIOR_LAMBDA:g})"
    assert {(row["subject"], row["condition"]) for row in rows} == {
        (run.name, "zero-shot"), (probe, "one-shot"), (probe, "two-shot"), (prior, "one-shot"), (prior, "two-shot")}
    assert unfinished.name not in {row["subject"] for row in rows}
    assert set(rows[0]) == {"subject", "subject_kind", "condition", "item", "target", "response", "rt_ms",
                            "p_target", "p_response"}
    by_key = {(r["subject"], r["condition"], r["item"]): r for r in rows}
    prediction = ModelPrediction.objects.filter(run=run, condition__shots=1, method="linear-probe",
                                                predicted__isnull=False).select_related("item__label", "predicted").first()
    row = by_key[(probe, "one-shot", str(prediction.item.code))]
    assert row == {
        "subject": probe, "subject_kind": "model", "condition": "one-shot", "item": str(prediction.item.code),
        "target": prediction.item.label.name, "response": prediction.predicted.name, "rt_ms": None,
        "p_target": prediction.p_target, "p_response": prediction.p_predicted,
    }
    assert {r["condition"] for r in rows} == {"zero-shot", "one-shot", "two-shot"}


def test_the_trials_pass_the_report_schema_validation(tiny_checkpoint):
    import pandas as pd

    from evaluator.report.trials import validate_trials

    study = make_study()
    score_all(create_run(study, tiny_checkpoint))
    validated = validate_trials(pd.DataFrame(model_trials(study=study)))
    assert set(validated["subject_kind"]) == {"model"}



def test_progress_counts_done_and_failed_items_and_estimates_the_rest(tiny_checkpoint):
    run = create_run(make_study(), tiny_checkpoint, chunk_size=4)
    first = run.chunks.order_by("index").first()
    model_run_score_chunk(chunk_id=first.pk)

    progress = model_run_progress(run=run)

    assert progress["status"] == "running"
    # 12 items, each answered once in zero-shot and by two methods in each of the one- and two-shot conditions.
    assert (progress["items_done"], progress["items_total"]) == (4 * 5, 12 * 5)
    assert (progress["chunks_done"], progress["chunks_total"]) == (1, 3)
    assert progress["rate_items_per_s"] > 0 and progress["eta_s"] > 0

