"""The models' probability vectors for the report, built from the stored predictions of a real (tiny) model run."""

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from evaluator.models import ModelPrediction, ModelRun
from evaluator.probability_table import PROBABILITY_COLUMNS, model_probability_table
from evaluator.report import ReportInputError, ReportOptions
from evaluator.study_reports import study_report_compute, study_trials
from studyapp.models import Assignment, Participant, Response
from tests.evaluator.helpers import create_run, score_all
from tests.factories import make_dataset, make_study

pytestmark = pytest.mark.django_db


def answer_every_item(study, *, n_people: int) -> None:
    """n_people answer every test item in every condition: person j picks class (item's class + j) mod C."""
    labels = list(study.dataset.classes.order_by("index"))
    items = [si.item for si in study.study_items.select_related("item__label").order_by("item_id")]
    for j in range(n_people):
        person = Participant.objects.create(study=study, consent="given")
        for condition in study.conditions.all():
            for position, item in enumerate(items):
                assignment = Assignment.objects.create(
                    participant=person, condition=condition, item=item, position=position, slot=j,
                    status=Assignment.Status.ANSWERED, expires_at=timezone.now() + timedelta(minutes=5))
                Response.objects.create(assignment=assignment, choice=labels[(item.label.index + j) % len(labels)])


@pytest.fixture
def scored(tiny_checkpoint):
    study = make_study(dataset=make_dataset(n_classes=3, train_per_class=2, test_per_class=3), k_per_item=3)
    run = create_run(study, tiny_checkpoint, fewshot_methods=["prototype", "linear-probe"])
    score_all(run)
    assert run.status == ModelRun.Status.DONE
    return study, run


def test_every_model_answer_gets_its_stored_vector_one_row_per_class_in_class_index_order(scored):
    study, run = scored
    table = model_probability_table(study=study)
    trials = study_trials(study=study)
    models = trials[trials["subject_kind"] == "model"]
    classes = list(study.dataset.classes.order_by("index").values_list("name", flat=True))

    assert list(table.columns) == PROBABILITY_COLUMNS
    assert len(table) == len(models) * len(classes)  # zero-shot + 2 methods x (one-, two-shot), 9 items each
    assert len(models) == 9 * 5
    keys = table[["subject", "condition", "item"]].drop_duplicates()
    assert set(map(tuple, keys.to_numpy())) == set(map(tuple, models[["subject", "condition", "item"]].to_numpy()))
    assert len(set(table["subject"])) == 3
    stored = {(run.subject(p.method), p.condition.name, str(p.item.code)): p
              for p in ModelPrediction.objects.filter(run=run).select_related("condition", "item", "predicted")}
    for (subject, condition, item), vector in table.groupby(["subject", "condition", "item"]):
        prediction = stored[(subject, condition, item)]
        assert list(vector["class"]) == classes
        np.testing.assert_allclose(vector["p"].to_numpy(), prediction.probs)
        assert vector["class"].to_numpy()[vector["p"].to_numpy().argmax()] == prediction.predicted.name
    merged = models.merge(table, left_on=["subject", "condition", "item", "target"],
                          right_on=["subject", "condition", "item", "class"])
    np.testing.assert_allclose(merged["p"], merged["p_target"])


def test_the_study_report_gets_the_vectors_and_shows_cross_entropy_and_kl(scored):
    study, run = scored
    answer_every_item(study, n_people=3)
    result = study_report_compute(study=study, options=ReportOptions(bootstrap=20, static=False,
                                                                     include_simulated=True))
    assert result.counts["n_probability_vectors"] == 9 * 5
    alignment = result.tables["alignment"]
    quantities = set(alignment["quantity"])
    assert {"cross_entropy", "kl_divergence", "human_entropy"} <= quantities
    assert alignment.loc[alignment["quantity"] == "kl_divergence", "estimate"].notna().all()
    assert "none given: no cross-entropy" not in result.html


def test_unfinished_runs_and_error_predictions_are_left_out_as_in_the_trial_table(scored):
    study, run = scored
    failed = ModelPrediction.objects.filter(run=run, method="").order_by("item_id").first()
    ModelPrediction.objects.filter(pk=failed.pk).update(predicted=None, probs=[], error="corrupt image")
    table = model_probability_table(study=study)
    assert str(failed.item.code) not in set(table.loc[table["condition"] == "zero-shot", "item"])
    assert len(table) == (9 * 5 - 1) * 3
    ModelRun.objects.filter(pk=run.pk).update(status=ModelRun.Status.RUNNING)
    empty = model_probability_table(study=study)
    assert list(empty.columns) == PROBABILITY_COLUMNS and empty.empty


def test_a_vector_of_the_wrong_length_is_refused_with_the_run_and_item_named(scored):
    study, run = scored
    ModelPrediction.objects.filter(run=run).update(probs=[0.5, 0.5])
    with pytest.raises(ReportInputError, match=r"has 2 probabilities for the dataset's 3 classes"):
        model_probability_table(study=study)
