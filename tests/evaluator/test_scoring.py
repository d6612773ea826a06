"""Scoring in-process (the same service a worker calls): predictions, shots, cache, exactly-once, recovery."""

from datetime import timedelta
from pathlib import Path

import pytest
import torch
from django.db import IntegrityError, transaction
from django.utils import timezone

import clipmodel
from clipmodel.fewshot import DEFAULT_C, DEFAULT_PRIOR_LAMBDA
from evaluator import scoring
from evaluator.models import ModelPrediction, ModelRun, ScoringChunk
from evaluator.selectors import model_run_progress
from evaluator.services import (
    MAX_CHUNK_ATTEMPTS,
    model_run_cancel,
    model_run_resume,
    model_run_score_chunk,
    model_runs_sweep,
)
from evaluator.tasks import score_chunk
from studyapp.models import ClassLabel, Item, ShotExample, StudyItem
from studyapp.services.images import image_path
from tests.evaluator.helpers import assert_scored_exactly_once, create_run, score_all
from tests.factories import make_dataset, make_study

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


def test_one_and_two_shot_classifiers_are_fitted_on_exactly_the_shots_the_participants_saw(tiny_checkpoint, monkeypatch):
    study = make_study()
    fitted = []
    real_fit = clipmodel.fit_few_shot

    def spy_fit(**kwargs):
        fitted.append(kwargs)
        return real_fit(**kwargs)

    monkeypatch.setattr(scoring.clipmodel, "fit_few_shot", spy_fit)
    run = create_run(study, tiny_checkpoint)
    score_all(run)

    clip = clipmodel.load_clip(checkpoint=tiny_checkpoint)
    # Both default subjects in each few-shot condition, with the hyperparameters the run recorded.
    assert [call["method"] for call in fitted] == ["linear-probe", "zero-shot-prior"] * 2
    assert run.fewshot_params == {"linear-probe": {"C": DEFAULT_C}, "zero-shot-prior": {"lambda": DEFAULT_PRIOR_LAMBDA}}
    assert [(call["C"], call["prior_lambda"]) for call in fitted] == [(DEFAULT_C, None), (None, DEFAULT_PRIOR_LAMBDA)] * 2
    conditions = study.conditions.filter(shots__gt=0).order_by("shots")
    for call, condition in zip(fitted, [c for c in conditions for _ in range(2)], strict=True):
        shots = list(ShotExample.objects.filter(condition=condition).select_related("item", "label")
                     .order_by("label__index", "rank"))
        assert len(shots) == 3 * condition.shots  # 3 classes
        expected = clipmodel.encode_images(clip=clip, images=[image_path(relative_path=s.item.image) for s in shots])
        assert torch.allclose(call["shot_features"], expected, atol=1e-5)
        assert call["shot_labels"].tolist() == [shot.label.index for shot in shots]
        assert call["num_classes"] == 3 and call["text_weights"].shape == (32, 3)


def test_the_second_and_third_conditions_reuse_the_first_conditions_image_embeddings(tiny_checkpoint, monkeypatch):
    study = make_study()
    encoded = []
    real = clipmodel.encode_images

    def counting(**kwargs):
        encoded.extend(str(p) for p in kwargs["images"])
        return real(**kwargs)

    monkeypatch.setattr(scoring.clipmodel, "encode_images", counting)
    test_images = {str(image_path(relative_path=i.item.image)) for i in StudyItem.objects.filter(study=study)}
    shot_images = {str(image_path(relative_path=s.item.image))
                   for s in ShotExample.objects.filter(condition__study=study)}

    first = create_run(study, tiny_checkpoint, chunk_size=4)
    score_all(first)
    # Each test image encoded once although it was classified in three conditions; each shot image once
    # although the one-shot shots are also two-shot shots.
    assert sorted(encoded) == sorted(test_images | shot_images)

    encoded.clear()
    second = create_run(study, tiny_checkpoint, name="tiny again", fewshot_methods=["prototype"])
    score_all(second)
    assert encoded == []  # the feature cache answers every image of a second run of the same model
    assert_scored_exactly_once(second)


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


def test_a_chunk_whose_worker_stopped_sending_heartbeats_is_requeued_by_the_sweeper(tiny_checkpoint, settings, monkeypatch):
    settings.SCORING_STALE_S = 30
    run = create_run(make_study(), tiny_checkpoint, chunk_size=100)
    chunk = run.chunks.get()
    ScoringChunk.objects.filter(pk=chunk.pk).update(
        status=ScoringChunk.Status.RUNNING, task_id="dead", worker="w1@host:123",
        heartbeat_at=timezone.now() - timedelta(seconds=10),
    )
    sent = []
    monkeypatch.setattr("evaluator.services._send", lambda *, chunk_ids: sent.extend(chunk_ids))
    monkeypatch.setattr("evaluator.services._queue_size", lambda: 1)

    assert model_runs_sweep()["requeued"] == 0  # 10 s of silence is not yet death
    ScoringChunk.objects.filter(pk=chunk.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=31))
    assert model_runs_sweep()["requeued"] == 1
    assert sent == [chunk.pk]

    assert model_run_score_chunk(chunk_id=chunk.pk, task_id="fresh") == "scored"
    assert_scored_exactly_once(run)
    assert ModelRun.objects.get(pk=run.pk).status == ModelRun.Status.DONE


def test_a_restarted_worker_takes_back_at_once_what_its_previous_process_held(tiny_checkpoint, monkeypatch):
    run = create_run(make_study(), tiny_checkpoint, chunk_size=100)
    chunk = run.chunks.get()
    ScoringChunk.objects.filter(pk=chunk.pk).update(status=ScoringChunk.Status.RUNNING, worker="w1@host:123",
                                                    heartbeat_at=timezone.now())
    sent = []
    monkeypatch.setattr("evaluator.services._send", lambda *, chunk_ids: sent.extend(chunk_ids))

    model_runs_sweep(worker="w2@host:555", restarted=True)
    assert sent == []
    model_runs_sweep(worker="w1@host:456", restarted=True)
    assert sent == [chunk.pk]


def test_pending_chunks_whose_messages_were_lost_are_sent_again_once_the_queue_is_empty(tiny_checkpoint, monkeypatch, settings):
    settings.SCORING_REQUEUE_GRACE_S = 60
    run = create_run(make_study(), tiny_checkpoint, chunk_size=4)
    sent = []
    monkeypatch.setattr("evaluator.services._send", lambda *, chunk_ids: sent.extend(chunk_ids))
    queue = {"size": 3}
    monkeypatch.setattr("evaluator.services._queue_size", lambda: queue["size"])
    run.chunks.update(queued_at=timezone.now() - timedelta(minutes=5))

    model_runs_sweep()
    assert sent == []  # messages are still waiting in the queue
    queue["size"] = 0
    model_runs_sweep()
    assert sorted(sent) == sorted(run.chunks.values_list("pk", flat=True))
    sent.clear()
    model_runs_sweep()
    assert sent == []  # just re-sent: give them the grace period


def test_cancelling_stops_the_run_after_the_current_chunk_and_resuming_scores_the_rest(tiny_checkpoint):
    run = create_run(make_study(), tiny_checkpoint, chunk_size=3)
    chunks = list(run.chunks.order_by("index").values_list("pk", flat=True))
    assert model_run_score_chunk(chunk_id=chunks[0]) == "scored"

    assert model_run_cancel(run=run)
    assert [model_run_score_chunk(chunk_id=pk) for pk in chunks[1:]] == ["skipped"] * (len(chunks) - 1)
    assert run.status == ModelRun.Status.CANCELLED
    assert ModelPrediction.objects.filter(run=run).count() == 3 * 5  # 3 items x (zero-shot + 2 methods x 2 conditions)

    assert model_run_resume(run=run) == len(chunks) - 1
    score_all(run)
    assert run.status == ModelRun.Status.DONE
    assert_scored_exactly_once(run)


def test_resuming_a_run_in_progress_changes_nothing(tiny_checkpoint):
    run = create_run(make_study(), tiny_checkpoint, chunk_size=3)
    assert model_run_score_chunk(chunk_id=run.chunks.order_by("index").first().pk) == "scored"
    run.refresh_from_db()
    before = (run.status, run.started_at, sorted(run.chunks.values_list("pk", "status")))
    assert run.status in (ModelRun.Status.PENDING, ModelRun.Status.RUNNING)

    assert model_run_resume(run=run) == 0
    run.refresh_from_db()
    assert (run.status, run.started_at, sorted(run.chunks.values_list("pk", "status"))) == before


def test_a_corrupt_image_gives_its_item_an_error_and_the_rest_of_the_run_completes(tiny_checkpoint):
    study = make_study()
    broken = StudyItem.objects.filter(study=study).first().item
    image_path(relative_path=broken.image).write_bytes(b"this is not a JPEG")
    run = create_run(study, tiny_checkpoint, chunk_size=5)

    score_all(run)

    assert run.status == ModelRun.Status.DONE
    assert_scored_exactly_once(run)
    failed = ModelPrediction.objects.filter(run=run, item=broken)
    assert failed.count() == 5  # zero-shot, and two methods in each of the one- and two-shot conditions
    assert all(p.predicted_id is None and p.p_target is None and "corrupt" in p.error for p in failed)
    assert not ModelPrediction.objects.filter(run=run, predicted__isnull=True).exclude(item=broken).exists()
    assert model_run_progress(run=run)["items_failed"] == 5


def test_a_worker_that_loads_different_weights_fails_the_run_instead_of_mixing_two_models(tiny_checkpoint, eager_celery):
    run = create_run(make_study(), tiny_checkpoint, chunk_size=4)
    ModelRun.objects.filter(pk=run.pk).update(fingerprint="tiny-test:sha256-000000000000:oc3.3.0")
    chunk = run.chunks.order_by("index").first()

    result = score_chunk.delay(chunk.pk)  # as a worker runs it: the failure callback fails the run

    assert result.failed() and isinstance(result.result, scoring.ScoringError)
    run.refresh_from_db()
    assert run.status == ModelRun.Status.FAILED and "weights changed" in run.error
    assert not ModelPrediction.objects.filter(run=run).exists()  # nothing of the other model was written


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


def test_the_class_columns_follow_the_class_index_even_when_labels_were_created_out_of_order(tiny_checkpoint):
    dataset = make_dataset(class_names=["Zebra", "Aardvark", "Moose"])
    # Re-create the labels so that their primary keys run against their indices: Moose, Aardvark, Zebra.
    labels = list(dataset.classes.order_by("index"))
    originals = {label.index: label for label in labels}
    for index in (2, 1, 0):
        old = originals[index]
        new = ClassLabel.objects.create(dataset=dataset, index=100 + index, name=f"{old.name} new",
                                        prompt_name=old.prompt_name)
        Item.objects.filter(label=old).update(label=new)
        old.delete()
        ClassLabel.objects.filter(pk=new.pk).update(index=index, name=old.name)
    by_pk = list(dataset.classes.order_by("pk").values_list("index", flat=True))
    assert by_pk == [2, 1, 0]  # created out of index order
    run = create_run(make_study(dataset=dataset), tiny_checkpoint)
    score_all(run)
    clip = clipmodel.load_clip(checkpoint=tiny_checkpoint)
    weights = clipmodel.zero_shot_weights(clip=clip, classnames=["zebra", "aardvark", "moose"],
                                          templates=["a photo of a {}."])
    prediction = ModelPrediction.objects.filter(run=run, condition__shots=0).select_related("item").first()
    features = clipmodel.encode_images(clip=clip, images=[Path(image_path(relative_path=prediction.item.image))])
    expected = clipmodel.zero_shot_probs(image_features=features, text_weights=weights, logit_scale=clip.logit_scale)[0]
    assert torch.allclose(torch.tensor(prediction.probs), expected, atol=1e-5)
