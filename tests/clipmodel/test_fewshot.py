import pytest
import torch
import torch.nn.functional as F

import clipmodel

NUM_CLASSES, DIM = 5, 32


def _separable_set(*, shots_per_class: int, test_per_class: int = 40, seed: int = 0):
    """Gaussian clusters around random unit centres; shots and test points drawn independently."""
    gen = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(NUM_CLASSES, DIM, generator=gen), dim=1)

    def draw(n):
        labels = torch.arange(NUM_CLASSES).repeat_interleave(n)
        return centres[labels] + 0.15 * torch.randn(len(labels), DIM, generator=gen), labels

    shots, shot_labels = draw(shots_per_class)
    test, test_labels = draw(test_per_class)
    # A weak, noisy text prior: better than nothing but far from perfect.
    text_weights = F.normalize(centres + 0.9 * torch.randn(NUM_CLASSES, DIM, generator=gen), dim=1).T
    return shots, shot_labels, test, test_labels, text_weights


@pytest.mark.parametrize("method", clipmodel.FEW_SHOT_METHODS)
@pytest.mark.parametrize("shots_per_class", [1, 2])
def test_few_shot_methods_beat_chance_on_a_separable_set(method, shots_per_class):
    shots, shot_labels, test, test_labels, text_weights = _separable_set(shots_per_class=shots_per_class)
    classifier = clipmodel.fit_few_shot(
        method=method,
        shot_features=shots,
        shot_labels=shot_labels,
        num_classes=NUM_CLASSES,
        text_weights=text_weights,
    )
    probs = classifier.predict_proba(test)
    assert probs.shape == (len(test), NUM_CLASSES)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(len(test)))
    accuracy = (probs.argmax(dim=1) == test_labels).float().mean().item()
    assert accuracy > 2 / NUM_CLASSES, accuracy  # twice chance (1/5)
    assert classifier.method == method


@pytest.mark.parametrize("method", clipmodel.FEW_SHOT_METHODS)
def test_few_shot_uses_exactly_the_given_shots(method):
    shots, shot_labels, _, _, text_weights = _separable_set(shots_per_class=2)
    fit = lambda s, y: clipmodel.fit_few_shot(  # noqa: E731
        method=method, shot_features=s, shot_labels=y, num_classes=NUM_CLASSES, text_weights=text_weights
    )
    classifier = fit(shots, shot_labels)
    assert classifier.shots_per_class.tolist() == [2] * NUM_CLASSES
    # Deterministic: the same shots give bit-identical classifiers.
    again = fit(shots.clone(), shot_labels.clone())
    assert torch.equal(classifier.weight, again.weight) and torch.equal(classifier.bias, again.bias)
    # Every shot matters: moving one shot changes the fit.
    moved = shots.clone()
    moved[0] = -moved[0]
    assert not torch.equal(fit(moved, shot_labels).weight, classifier.weight)
    # It learned its own shots.
    assert torch.equal(classifier.predict_proba(shots).argmax(dim=1), shot_labels)


def test_prototype_is_the_scaled_cosine_to_normalised_class_means():
    shots, shot_labels, test, _, _ = _separable_set(shots_per_class=2)
    classifier = clipmodel.fit_few_shot(
        method="prototype", shot_features=shots, shot_labels=shot_labels, num_classes=NUM_CLASSES, logit_scale=50.0
    )
    normed = F.normalize(shots, dim=1)
    prototypes = F.normalize(torch.stack([normed[shot_labels == c].mean(dim=0) for c in range(NUM_CLASSES)]), dim=1)
    expected = (50.0 * F.normalize(test, dim=1) @ prototypes.T).softmax(dim=1)
    torch.testing.assert_close(classifier.predict_proba(test), expected, rtol=1e-5, atol=1e-6)


def test_zero_shot_prior_with_a_huge_penalty_stays_the_zero_shot_classifier():
    shots, shot_labels, test, _, text_weights = _separable_set(shots_per_class=1)
    classifier = clipmodel.fit_few_shot(
        method="zero-shot-prior",
        shot_features=shots,
        shot_labels=shot_labels,
        num_classes=NUM_CLASSES,
        text_weights=text_weights,
        logit_scale=100.0,
        l2=1e9,
    )
    expected = clipmodel.zero_shot_probs(image_features=test, text_weights=text_weights, logit_scale=100.0)
    torch.testing.assert_close(classifier.predict_proba(test), expected, rtol=1e-4, atol=1e-5)


def test_zero_shot_prior_improves_on_a_weak_prior():
    shots, shot_labels, test, test_labels, text_weights = _separable_set(shots_per_class=2)
    zero_shot = clipmodel.zero_shot_probs(image_features=test, text_weights=text_weights)
    prior = clipmodel.fit_few_shot(
        method="zero-shot-prior",
        shot_features=shots,
        shot_labels=shot_labels,
        num_classes=NUM_CLASSES,
        text_weights=text_weights,
    ).predict_proba(test)

    def accuracy(p):
        return (p.argmax(dim=1) == test_labels).float().mean().item()

    assert accuracy(prior) > accuracy(zero_shot)


def test_linear_probe_gives_probabilities_for_classes_without_shots():
    shots, shot_labels, test, _, _ = _separable_set(shots_per_class=1)
    keep = shot_labels < 3
    probs = clipmodel.fit_few_shot(
        method="linear-probe", shot_features=shots[keep], shot_labels=shot_labels[keep], num_classes=NUM_CLASSES
    ).predict_proba(test)
    assert probs.shape == (len(test), NUM_CLASSES) and (probs > 0).all()


def test_invalid_few_shot_inputs_are_rejected():
    shots, shot_labels, _, _, _ = _separable_set(shots_per_class=1)
    with pytest.raises(ValueError, match="method"):
        clipmodel.fit_few_shot(method="knn", shot_features=shots, shot_labels=shot_labels, num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="text_weights"):
        clipmodel.fit_few_shot(method="zero-shot-prior", shot_features=shots, shot_labels=shot_labels, num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="at least one shot"):
        clipmodel.fit_few_shot(method="prototype", shot_features=shots[:2], shot_labels=shot_labels[:2], num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="shot_labels"):
        clipmodel.fit_few_shot(method="prototype", shot_features=shots, shot_labels=shot_labels + 1, num_classes=NUM_CLASSES)
