import pytest
import torch

import clipmodel
from clipmodel.templates import BENCHMARKS, EUROSAT_TEMPLATES, IMAGENET_TEMPLATES, PETS_TEMPLATES
from clipmodel.zeroshot import ensemble_text_embeddings

CLASSES = ["cat", "dog", "bird"]
PETS = list(BENCHMARKS[0].classes)
TEMPLATES = ["a photo of a {}.", "a drawing of a {}."]


def test_zero_shot_classifier_equals_hand_computation(tiny_clip):
    image_features = torch.randn(5, 16)
    columns = []
    with torch.no_grad():
        for name in CLASSES:
            embeddings = [tiny_clip.model.encode_text(tiny_clip.tokenizer([t.format(name)]))[0] for t in TEMPLATES]
            mean = torch.stack([e / e.norm() for e in embeddings]).mean(dim=0)
            columns.append(mean / mean.norm())
    weights = torch.stack(columns, dim=1)
    images = image_features / image_features.norm(dim=1, keepdim=True)
    expected = (tiny_clip.logit_scale * images @ weights).softmax(dim=1)

    got_weights = clipmodel.zero_shot_weights(clip=tiny_clip, classnames=CLASSES, templates=TEMPLATES)
    assert got_weights.shape == (16, 3)
    torch.testing.assert_close(got_weights, weights, rtol=1e-5, atol=1e-6)
    probs = clipmodel.zero_shot_probs(image_features=image_features, text_weights=got_weights, logit_scale=tiny_clip.logit_scale)
    torch.testing.assert_close(probs, expected, rtol=1e-5, atol=1e-6)
    classified = clipmodel.classify(clip=tiny_clip, image_features=image_features, classnames=CLASSES, templates=TEMPLATES)
    torch.testing.assert_close(classified, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(5))


def test_ensembling_normalises_each_template_embedding_before_averaging():
    # Class 0: a long and a short embedding; averaging raw vectors would lean to the long one.
    embeddings = torch.tensor([[[3.0, 0.0], [0.0, 1.0]], [[0.0, 2.0], [0.0, 5.0]]])
    weights = ensemble_text_embeddings(list(embeddings))
    half = 2**-0.5
    torch.testing.assert_close(weights, torch.tensor([[half, 0.0], [half, 1.0]]))


def test_permuting_classnames_permutes_probability_columns(tiny_clip):
    image_features = torch.randn(6, 16)
    permutation = [2, 0, 1]
    base = clipmodel.classify(clip=tiny_clip, image_features=image_features, classnames=CLASSES, templates=TEMPLATES)
    permuted = clipmodel.classify(
        clip=tiny_clip, image_features=image_features, classnames=[CLASSES[i] for i in permutation], templates=TEMPLATES
    )
    torch.testing.assert_close(permuted, base[:, permutation])
    assert not torch.allclose(permuted, base)  # the columns really moved


def test_duplicate_classnames_are_rejected(tiny_clip):
    with pytest.raises(ValueError, match="unique"):
        clipmodel.zero_shot_weights(clip=tiny_clip, classnames=["cat", "cat"], templates=TEMPLATES)


def test_templates_for_known_datasets_and_generic_fallback():
    assert clipmodel.templates_for("oxford_pets") == ("a photo of a {}, a type of pet.",) == PETS_TEMPLATES
    assert clipmodel.templates_for("EuroSAT") == EUROSAT_TEMPLATES
    assert "a centered satellite photo of {}." in EUROSAT_TEMPLATES
    assert clipmodel.templates_for("something else") == IMAGENET_TEMPLATES
    assert len(IMAGENET_TEMPLATES) == 80 and all(t.count("{}") == 1 for t in IMAGENET_TEMPLATES)


def test_user_templates_are_validated():
    assert clipmodel.validate_templates(["itap of a {}."]) == ("itap of a {}.",)
    for bad in (["no slot"], ["{} and {}"], ["a {0}"], ["a {name}"], [], "a photo of a {}.", [3]):
        with pytest.raises(ValueError):
            clipmodel.validate_templates(bad)


EUROSAT_FOLDERS = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
                   "PermanentCrop", "Residential", "River", "SeaLake"]


def test_eurosat_classes_get_clips_prompt_names_in_the_datasets_own_class_order():
    match = clipmodel.benchmark_match(list(reversed(EUROSAT_FOLDERS)))
    assert match.benchmark.key == "eurosat" and match.benchmark.templates == EUROSAT_TEMPLATES
    assert match.prompt_names == list(reversed([
        "annual crop land", "forest", "brushland or shrubland", "highway or road",
        "industrial buildings or commercial buildings", "pasture land", "permanent crop land",
        "residential buildings or homes or apartments", "river", "lake or sea",
    ]))
    # The shared manifest's label names ("Sea Lake") are the same classes.
    spaced = ["Annual Crop", "Forest", "Herbaceous Vegetation", "Highway", "Industrial", "Pasture", "Permanent Crop",
              "Residential", "River", "Sea Lake"]
    assert clipmodel.benchmark_match(spaced).prompt_names[9] == "lake or sea"


def test_pets_and_cifar10_classes_get_clips_names_and_templates_and_anything_else_the_generic_ones():
    pets = clipmodel.benchmark_match(["american_pit_bull_terrier"] + [n for n in PETS if n != "american pit bull terrier"])
    assert pets.benchmark.key == "oxford-pets" and pets.prompt_names[0] == "american pit bull terrier"
    assert pets.benchmark.templates == PETS_TEMPLATES
    cifar = clipmodel.benchmark_match(["truck", "ship", "horse", "frog", "dog", "deer", "cat", "bird", "automobile",
                                       "airplane"])
    assert cifar.benchmark.key == "cifar10" and len(cifar.benchmark.templates) == 18
    # A subset, an extra class or a near miss is not the benchmark.
    assert clipmodel.benchmark_match(EUROSAT_FOLDERS[:9]) is None
    assert clipmodel.benchmark_match([*EUROSAT_FOLDERS, "Glacier"]) is None
    assert clipmodel.benchmark_match(["Abyssinian", "Beagle"]) is None
    assert clipmodel.prompt_defaults(["Red Square", "Blue"]) == (["red square", "blue"], IMAGENET_TEMPLATES)


def test_class_prompts_are_the_exact_strings_per_class():
    assert clipmodel.class_prompts(classnames=["cat", "dog"], templates=["a {}.", "the {}!"]) == [
        ["a cat.", "the cat!"], ["a dog.", "the dog!"]]


def test_zero_shot_probabilities_scale_cosines_by_clips_trained_100_unless_told_otherwise():
    image_features, text_weights = torch.randn(6, 16), torch.randn(16, 3)
    cosines = torch.nn.functional.normalize(image_features, dim=1) @ torch.nn.functional.normalize(text_weights, dim=0)
    torch.testing.assert_close(clipmodel.zero_shot_probs(image_features=image_features, text_weights=text_weights),
                               (100.0 * cosines).softmax(dim=1))


def test_a_single_class_is_a_valid_zero_shot_classifier(tiny_clip):
    weights = clipmodel.zero_shot_weights(clip=tiny_clip, classnames=["cat"], templates=TEMPLATES)
    assert weights.shape == (16, 1)
    torch.testing.assert_close(weights.norm(dim=0), torch.ones(1))


def test_classnames_that_are_not_a_non_empty_list_are_rejected_with_the_reason(tiny_clip):
    for classnames in ("cat", []):
        with pytest.raises(ValueError, match="^classnames must be a non-empty ordered list of strings$"):
            clipmodel.zero_shot_weights(clip=tiny_clip, classnames=classnames, templates=TEMPLATES)
    with pytest.raises(ValueError, match="^classnames must be unique, otherwise two classes share one column$"):
        clipmodel.zero_shot_weights(clip=tiny_clip, classnames=["cat", "dog", "cat"], templates=TEMPLATES)


def test_prompts_that_are_not_one_non_empty_list_per_class_are_rejected_with_the_reason(tiny_clip):
    why = r"^prompts must be a non-empty list \(one per class\) of non-empty lists of strings$"
    for prompts in ("a photo of a cat.", [], [["a photo of a cat."], []], [["a photo of a cat."], "a dog."]):
        with pytest.raises(ValueError, match=why):
            clipmodel.prompt_weights(clip=tiny_clip, prompts=prompts)


def test_prompt_weights_do_not_depend_on_how_the_prompts_are_batched(tiny_clip):
    prompts = [["a photo of a cat.", "a cat."], ["a dog."], ["a photo of a bird.", "a bird.", "birds."]]
    whole = clipmodel.prompt_weights(clip=tiny_clip, prompts=prompts)
    assert whole.shape == (16, 3)
    for batch_size in (1, 2, 5):
        torch.testing.assert_close(clipmodel.prompt_weights(clip=tiny_clip, prompts=prompts, batch_size=batch_size),
                                   whole, rtol=1e-5, atol=1e-6)


def test_zero_shot_weights_send_at_most_batch_size_prompts_through_the_text_encoder_at_once(tiny_clip, monkeypatch):
    # The bound that keeps 80 templates x 1000 classes within a GPU's memory.
    passes = []
    encode_text = tiny_clip.model.encode_text

    def recording_encode_text(tokens, *args, **kwargs):
        passes.append(len(tokens))
        return encode_text(tokens, *args, **kwargs)

    monkeypatch.setattr(tiny_clip.model, "encode_text", recording_encode_text)
    weights = clipmodel.zero_shot_weights(clip=tiny_clip, classnames=CLASSES, templates=TEMPLATES, batch_size=4)
    assert passes == [4, 2]  # 3 classes x 2 templates
    torch.testing.assert_close(weights, clipmodel.zero_shot_weights(clip=tiny_clip, classnames=CLASSES,
                                                                     templates=TEMPLATES), rtol=1e-5, atol=1e-6)
