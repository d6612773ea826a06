"""evaluator.scoring, the model side of a worker: classifiers fitted on exactly the participants' shots, each
image encoded once, unusable images as per-item errors, class columns in class-index order."""

import hashlib
from pathlib import Path

import pytest
import torch

import clipmodel
from clipmodel.fewshot import DEFAULT_C, DEFAULT_PRIOR_LAMBDA
from evaluator import scoring
from evaluator.models import ModelPrediction, ModelRun
from evaluator.selectors import model_run_progress
from studyapp.models import ClassLabel, Item, ShotExample, StudyItem
from studyapp.services.images import image_path
from tests.evaluator.helpers import assert_scored_exactly_once, create_run, score_all
from tests.factories import make_dataset, make_study

pytestmark = pytest.mark.django_db


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

    def counting(**kwargs):  # the worker hands over each file's bytes, read once and checked
        encoded.extend(hashlib.sha256(image.getvalue()).hexdigest() for image in kwargs["images"])
        return real(**kwargs)

    monkeypatch.setattr(scoring.clipmodel, "encode_images", counting)
    test_images = {i.item.content_hash for i in StudyItem.objects.filter(study=study).select_related("item")}
    shot_images = {s.item.content_hash for s in ShotExample.objects.filter(condition__study=study).select_related("item")}

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

