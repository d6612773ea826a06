"""evaluator.services.chunks: every item scored exactly once, whatever messages arrive (duplicates, redeliveries,
retries, requeues), and one model per run."""

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

import clipmodel
from evaluator import scoring
from evaluator.models import ModelPrediction, ModelRun, ScoringChunk
from evaluator.services.chunks import MAX_CHUNK_ATTEMPTS, Prediction, _predictions_insert, model_run_score_chunk
from evaluator.tasks import score_chunk
from tests.evaluator.helpers import assert_scored_exactly_once, create_run, score_all
from tests.factories import make_study

pytestmark = pytest.mark.django_db


def test_a_run_scores_every_item_once_in_every_condition_with_the_probability_of_every_class(tiny_checkpoint):
    study = make_study()
    run = create_run(study, tiny_checkpoint, chunk_size=5)

    assert set(score_all(run)) == {"scored"}

    assert run.status == ModelRun.Status.DONE
    assert_scored_exactly_once(run)
    n_classes = study.dataset.classes.count()
    labels = {label.pk: label.index for label in study.dataset.classes.all()}
    for prediction in ModelPrediction.objects.filter(run=run).select_related("item"):
        assert len(prediction.probs) == n_classes
        assert sum(prediction.probs) == pytest.approx(1.0, abs=1e-4)
        assert prediction.p_predicted == max(prediction.probs)
        assert prediction.probs[labels[prediction.predicted_id]] == prediction.p_predicted
        assert prediction.p_target == prediction.probs[labels[prediction.item.label_id]]
        assert prediction.error == ""


def test_the_run_records_what_model_scored_it_and_how(tiny_checkpoint):
    study = make_study()
    run = create_run(study, tiny_checkpoint, templates=["a photo of a {}.", "a {} in a picture."],
                     fewshot_methods=["prototype"])
    score_all(run)

    assert run.fingerprint == clipmodel.load_clip(checkpoint=tiny_checkpoint).fingerprint
    assert run.fingerprint_info["checkpoint_sha256"]
    assert run.templates == ["a photo of a {}.", "a {} in a picture."]
    # The exact prompt strings, by class index, from each class's prompt name.
    assert run.prompts == [[f"a photo of a {n}.", f"a {n} in a picture."] for n in ("class a", "class b", "class c")]
    assert run.fewshot_methods == ["prototype"] and run.fewshot_params == {"prototype": {}}
    assert run.device == "cpu" and run.dtype == "fp32"
    assert {"torch", "open_clip", "python"} <= set(run.versions)
    assert run.started_at <= run.finished_at


def test_a_requeued_chunk_scores_only_the_predictions_that_are_missing(tiny_checkpoint):
    run = create_run(make_study(), tiny_checkpoint, chunk_size=100)
    score_all(run)
    kept = dict(ModelPrediction.objects.filter(run=run).values_list("pk", "created_at"))
    lost = list(ModelPrediction.objects.filter(run=run).order_by("pk")[:5].values_list("pk", flat=True))
    ModelPrediction.objects.filter(pk__in=lost).delete()
    ModelRun.objects.filter(pk=run.pk).update(status=ModelRun.Status.RUNNING)
    run.chunks.update(status=ScoringChunk.Status.PENDING)

    assert score_all(run) == ["scored"]

    assert_scored_exactly_once(run)
    survivors = dict(ModelPrediction.objects.filter(run=run, pk__in=kept).values_list("pk", "created_at"))
    assert survivors == {pk: at for pk, at in kept.items() if pk not in lost}


def test_writing_a_prediction_the_run_already_has_keeps_the_stored_one_and_writes_the_others(tiny_checkpoint):
    run = create_run(make_study(), tiny_checkpoint, chunk_size=100)
    score_all(run)
    stored = ModelPrediction.objects.filter(run=run).order_by("pk")
    first, lost = stored[0], stored[1]
    before = timezone.now()
    ModelPrediction.objects.filter(pk=lost.pk).delete()
    other = first.probs[::-1]

    _predictions_insert(run_id=run.pk, rows=[
        Prediction(condition_id=first.condition_id, method=first.method, item_id=first.item_id,
                   predicted_id=first.predicted_id, probs=other, p_target=0.5, p_predicted=0.5, error=""),
        Prediction(condition_id=lost.condition_id, method=lost.method, item_id=lost.item_id,
                   predicted_id=lost.predicted_id, probs=lost.probs, p_target=lost.p_target,
                   p_predicted=lost.p_predicted, error=""),
    ])

    assert ModelPrediction.objects.get(pk=first.pk).probs == first.probs
    rewritten = ModelPrediction.objects.get(run=run, condition=lost.condition, method=lost.method, item=lost.item)
    assert (rewritten.predicted_id, rewritten.probs, rewritten.p_target, rewritten.p_predicted) == (
        lost.predicted_id, lost.probs, lost.p_target, lost.p_predicted)
    assert before <= rewritten.created_at <= timezone.now()
    assert_scored_exactly_once(run)


def test_a_prediction_with_neither_an_answer_nor_an_error_is_refused_not_dropped(tiny_checkpoint):
    run = create_run(make_study(), tiny_checkpoint, chunk_size=100)
    condition = run.study.conditions.get(shots=0)
    item = run.study.study_items.first().item

    with pytest.raises(IntegrityError), transaction.atomic():
        _predictions_insert(run_id=run.pk, rows=[
            Prediction(condition_id=condition.pk, method="", item_id=item.pk, predicted_id=None, probs=[],
                       p_target=None, p_predicted=None, error=""),
        ])


def test_the_database_refuses_a_second_prediction_for_the_same_run_condition_and_item(tiny_checkpoint):
    run = create_run(make_study(), tiny_checkpoint)
    score_all(run)
    existing = ModelPrediction.objects.filter(run=run).first()
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelPrediction.objects.create(run=run, condition=existing.condition, item=existing.item,
                                       predicted=existing.predicted, probs=existing.probs)


def test_a_second_message_for_a_chunk_being_scored_is_skipped_but_a_redelivery_of_the_same_task_is_not(tiny_checkpoint):
    run = create_run(make_study(), tiny_checkpoint, chunk_size=100)
    chunk = run.chunks.get()
    ScoringChunk.objects.filter(pk=chunk.pk).update(status=ScoringChunk.Status.RUNNING, task_id="task-a",
                                                    heartbeat_at=timezone.now())

    assert model_run_score_chunk(chunk_id=chunk.pk, task_id="task-b") == "skipped"
    assert not ModelPrediction.objects.filter(run=run).exists()

    # The same task id again means our own message came back (retry, or redelivery after our worker died).
    assert model_run_score_chunk(chunk_id=chunk.pk, task_id="task-a") == "scored"
    chunk.refresh_from_db()
    assert (chunk.status, chunk.attempts) == (ScoringChunk.Status.DONE, 1)
    assert model_run_score_chunk(chunk_id=chunk.pk, task_id="task-c") == "skipped"
    assert_scored_exactly_once(run)


@pytest.mark.parametrize(("retries", "outcome"), [(6, "scored"), (5, "failed")])
def test_a_retry_after_a_transient_error_is_not_a_new_attempt_but_a_redelivery_after_a_kill_is(
    tiny_checkpoint, retries, outcome
):
    # The chunk has been claimed MAX_CHUNK_ATTEMPTS times already, the last time by retry 5 of task-a.
    run = create_run(make_study(), tiny_checkpoint, chunk_size=100)
    chunk = run.chunks.get()
    ScoringChunk.objects.filter(pk=chunk.pk).update(status=ScoringChunk.Status.RUNNING, task_id="task-a", task_retries=5,
                                                    attempts=MAX_CHUNK_ATTEMPTS, heartbeat_at=timezone.now())
    # Retry 6 (Celery's autoretry after, say, a locked database) carries on; retry 5 delivered again
    # means the worker died holding it once more: poison.
    assert model_run_score_chunk(chunk_id=chunk.pk, task_id="task-a", retries=retries) == outcome
    chunk.refresh_from_db()
    assert chunk.attempts == MAX_CHUNK_ATTEMPTS + (outcome == "failed")
    run.refresh_from_db()
    assert (run.status == ModelRun.Status.FAILED) == (outcome == "failed")


def test_a_worker_that_loads_different_weights_fails_the_run_instead_of_mixing_two_models(tiny_checkpoint, eager_celery):
    run = create_run(make_study(), tiny_checkpoint, chunk_size=4)
    ModelRun.objects.filter(pk=run.pk).update(fingerprint="tiny-test:sha256-000000000000:oc3.3.0")
    chunk = run.chunks.order_by("index").first()

    result = score_chunk.delay(chunk.pk)  # as a worker runs it: the failure callback fails the run

    assert result.failed() and isinstance(result.result, scoring.ScoringError)
    run.refresh_from_db()
    assert run.status == ModelRun.Status.FAILED and "weights changed" in run.error
    assert not ModelPrediction.objects.filter(run=run).exists()  # nothing of the other model was written

