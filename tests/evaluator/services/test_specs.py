"""evaluator.services.specs: the model choice, the run's subject name, its prompt templates."""

import pytest
import torch

import clipmodel
from evaluator.errors import ScoringSetupError
from evaluator.models import ModelPrediction
from evaluator.services.specs import ModelSpec, default_templates, model_run_default_name, model_spec_resolve, study_benchmark
from studyapp.models import ClassLabel, Dataset
from studyapp.services.images import image_path
from tests.evaluator.helpers import create_run, score_all
from tests.factories import PET_BREEDS, make_dataset, make_study

pytestmark = pytest.mark.django_db


def test_a_house_model_run_is_named_as_the_house_model_and_never_as_clip(tiny_house_checkpoint):
    spec = model_spec_resolve(checkpoint=str(tiny_house_checkpoint))

    assert spec.is_house_model
    name = model_run_default_name(spec=spec)
    assert name.startswith(f"house model ({clipmodel.HOUSE_MODEL_NAME}, sha256-")
    assert "CLIP" not in name
    run = create_run(make_study(), tiny_house_checkpoint)
    assert run.is_house_model and run.name == name
    with pytest.raises(ScoringSetupError, match="only OpenAI's CLIP"):
        create_run(make_study(), tiny_house_checkpoint, name="CLIP ViT-B/32")
    with pytest.raises(ScoringSetupError, match="must start with 'house model'"):
        create_run(make_study(), tiny_house_checkpoint, name="our model")


def test_only_openai_weights_are_called_clip():
    assert model_run_default_name(spec=ModelSpec(model_name="ViT-B-32", pretrained="openai")) == "CLIP ViT-B/32"
    assert model_run_default_name(spec=ModelSpec(model_name="RN50", pretrained="openai")) == "CLIP RN50"
    laion = model_run_default_name(spec=ModelSpec(model_name="ViT-B-32", pretrained="laion2b_s34b_b79k"))
    assert laion == "OpenCLIP ViT-B-32 (laion2b_s34b_b79k)"


def test_a_plain_checkpoint_run_names_its_architecture_file_and_hash(tiny_checkpoint):
    name = model_run_default_name(spec=model_spec_resolve(checkpoint=str(tiny_checkpoint)))
    assert name.startswith("tiny-test (checkpoint tiny.pt, sha256-")


def test_model_choices_that_cannot_be_one_reproducible_model_are_refused(tmp_path):
    with pytest.raises(ScoringSetupError, match="pretrained tag"):
        model_spec_resolve(model_name="ViT-B-32")  # random weights would differ in every worker
    with pytest.raises(ScoringSetupError, match="not found"):
        model_spec_resolve(checkpoint=str(tmp_path / "missing.pt"))
    with pytest.raises(ScoringSetupError, match="either"):
        model_spec_resolve(model_name="ViT-B-32", pretrained="openai", checkpoint=str(tmp_path / "x.pt"))




def test_pets_studies_get_the_clip_paper_pets_prompt_and_prompt_names_in_class_index_order(tiny_checkpoint):
    dataset = make_dataset(name="any name", class_names=PET_BREEDS, train_per_class=2, test_per_class=1)
    # Prompt names as an import sets them for Pets (CLIP's), in an order unlike the class order.
    for label in dataset.classes.all():
        ClassLabel.objects.filter(pk=label.pk).update(prompt_name=f"breed {36 - label.index}")
    study = make_study(dataset=dataset)

    assert default_templates(study=study) == ("a photo of a {}, a type of pet.",)
    run = create_run(study, tiny_checkpoint, templates=None, conditions=[0])
    assert run.templates == ["a photo of a {}, a type of pet."]
    assert run.prompts == [[f"a photo of a breed {36 - i}, a type of pet."] for i in range(37)]
    score_all(run)  # scored with exactly those prompts, column i = class index i
    clip = clipmodel.load_clip(checkpoint=tiny_checkpoint)
    weights = clipmodel.prompt_weights(clip=clip, prompts=run.prompts)
    prediction = ModelPrediction.objects.filter(run=run).select_related("item").first()
    features = clipmodel.encode_images(clip=clip, images=[image_path(relative_path=prediction.item.image)])
    expected = clipmodel.zero_shot_probs(image_features=features, text_weights=weights, logit_scale=clip.logit_scale)
    assert torch.allclose(torch.tensor(prediction.probs), expected[0], atol=1e-5)


def test_a_study_of_a_subset_of_a_benchmarks_classes_gets_the_generic_templates(tiny_checkpoint):
    study = make_study(dataset=make_dataset(class_names=["Abyssinian", "Beagle", "Bengal"]))
    assert default_templates(study=study) == clipmodel.templates_for(None)
    assert study_benchmark(study=study) is None


def test_dataset_format_alone_selects_the_pets_prompt(tiny_checkpoint):
    dataset = make_dataset(name="my cats and dogs")
    Dataset.objects.filter(pk=dataset.pk).update(source_format=Dataset.Format.OXFORD_PETS)
    dataset.refresh_from_db()
    assert default_templates(study=make_study(dataset=dataset)) == ("a photo of a {}, a type of pet.",)

