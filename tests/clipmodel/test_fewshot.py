from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import clipmodel
from clipmodel.fewshot import DEFAULT_C, default_params

NUM_CLASSES, DIM = 5, 32


def _separable_set(*, shots_per_class: int, test_per_class: int = 40, seed: int = 0, noise: float = 0.15):
    """Gaussian clusters around random unit centres; shots and test points drawn independently."""
    gen = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(NUM_CLASSES, DIM, generator=gen), dim=1)

    def draw(n):
        labels = torch.arange(NUM_CLASSES).repeat_interleave(n)
        return centres[labels] + noise * torch.randn(len(labels), DIM, generator=gen), labels

    shots, shot_labels = draw(shots_per_class)
    test, test_labels = draw(test_per_class)
    # A weak, noisy text prior: better than nothing but far from perfect.
    text_weights = F.normalize(centres + 0.9 * torch.randn(NUM_CLASSES, DIM, generator=gen), dim=1).T
    return shots, shot_labels, test, test_labels, text_weights


@pytest.mark.parametrize("method", ["linear-probe", "prototype"])
@pytest.mark.parametrize("shots_per_class", [1, 2])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_probe_and_the_prototypes_classify_well_separated_clusters_without_a_single_error(method, shots_per_class,
                                                                                             seed):
    # Clusters 0.05 wide around random unit centres: one shot per class already pins each class down.
    shots, shot_labels, test, test_labels, _ = _separable_set(shots_per_class=shots_per_class, seed=seed, noise=0.05)
    classifier = clipmodel.fit_few_shot(method=method, shot_features=shots, shot_labels=shot_labels,
                                        num_classes=NUM_CLASSES)
    probs = classifier.predict_proba(test)
    assert probs.shape == (len(test), NUM_CLASSES)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(len(test)))
    assert (probs.argmax(dim=1) == test_labels).float().mean().item() == 1.0
    assert classifier.method == method


@pytest.mark.parametrize("shots_per_class", [1, 2])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_prior_probe_moves_from_its_prior_to_the_shots_as_its_strength_falls(shots_per_class, seed):
    # A noisy prior (zero-shot accuracy 40-75%) and perfectly separable shots.
    shots, shot_labels, test, test_labels, text_weights = _separable_set(shots_per_class=shots_per_class, seed=seed,
                                                                        noise=0.05)

    def fitted(strength):
        return clipmodel.fit_few_shot(method="zero-shot-prior", shot_features=shots, shot_labels=shot_labels,
                                      num_classes=NUM_CLASSES, text_weights=text_weights, prior_lambda=strength)

    def accuracy(classifier, x, y):
        return (classifier.predict_proba(x).argmax(dim=1) == y).float().mean().item()

    zero_shot = (clipmodel.zero_shot_probs(image_features=test, text_weights=text_weights).argmax(dim=1)
                 == test_labels).float().mean().item()
    strengths = [1e-4, 1e-2, 1.0, 10.0, 1e9]
    accuracies = [accuracy(fitted(s), test, test_labels) for s in strengths]
    assert zero_shot < 0.8
    assert accuracies == sorted(accuracies, reverse=True)  # a stronger pull to the prior never helps here
    assert accuracies[0] >= 0.9 and accuracies[-1] == zero_shot
    assert all(accuracy(fitted(s), shots, shot_labels) == 1.0 for s in strengths[:-1])  # it learns its shots


@pytest.mark.parametrize("method", clipmodel.FEW_SHOT_METHODS)
def test_few_shot_uses_exactly_the_given_shots(method):
    shots, shot_labels, _, _, text_weights = _separable_set(shots_per_class=2)
    # A prior strength at which this weak prior lets the shots count (the default keeps it near its prior).
    strength = {"prior_lambda": 1.0} if method == "zero-shot-prior" else {}
    fit = lambda s, y: clipmodel.fit_few_shot(  # noqa: E731
        method=method, shot_features=s, shot_labels=y, num_classes=NUM_CLASSES, text_weights=text_weights, **strength
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
        prior_lambda=1e9,
    )
    expected = clipmodel.zero_shot_probs(image_features=test, text_weights=text_weights, logit_scale=100.0)
    torch.testing.assert_close(classifier.predict_proba(test), expected, rtol=1e-4, atol=1e-5)


def test_linear_probe_never_predicts_a_class_without_shots_and_treats_all_of_them_alike():
    shots, shot_labels, test, test_labels, _ = _separable_set(shots_per_class=1, noise=0.05)
    keep = shot_labels < 3
    classifier = clipmodel.fit_few_shot(
        method="linear-probe", shot_features=shots[keep], shot_labels=shot_labels[keep], num_classes=NUM_CLASSES
    )
    probs = classifier.predict_proba(test)
    assert probs.shape == (len(test), NUM_CLASSES) and (probs > 0).all()
    # Classes 3 and 4 have no shot: the gradient treats them identically, so their columns are equal ...
    torch.testing.assert_close(classifier.weight[3], classifier.weight[4])
    torch.testing.assert_close(probs[:, 3], probs[:, 4])
    # ... and their bias lies below every seen class's, so the probe never picks them.
    assert classifier.bias[3] < classifier.bias[:3].min()
    assert set(probs.argmax(dim=1).tolist()) <= {0, 1, 2}
    seen = test_labels < 3
    assert (probs[seen].argmax(dim=1) == test_labels[seen]).all()


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


@pytest.mark.parametrize("method", clipmodel.FEW_SHOT_METHODS)
def test_a_fit_without_hyperparameters_uses_exactly_the_defaults_a_run_records(method):
    shots, shot_labels, _, _, text_weights = _separable_set(shots_per_class=2)

    def fit(**params):
        return clipmodel.fit_few_shot(method=method, shot_features=shots, shot_labels=shot_labels,
                                      num_classes=NUM_CLASSES, text_weights=text_weights, **params)

    recorded = default_params(method)
    as_arguments = {"C": "C", "lambda": "prior_lambda"}
    explicit = fit(**{as_arguments[name]: value for name, value in recorded.items()})
    default = fit()
    assert torch.equal(default.weight, explicit.weight) and torch.equal(default.bias, explicit.bias)
    if method == "prototype":
        assert recorded == {}  # nothing to tune: the class means are the classifier
    else:
        (name, value), = recorded.items()
        # The recorded value is the one that shaped the fit: another value gives another classifier.
        assert not torch.equal(fit(**{as_arguments[name]: value * 10}).weight, default.weight)


def test_the_prototypes_scale_cosines_by_clips_trained_100_unless_told_otherwise():
    shots, shot_labels, _, _, _ = _separable_set(shots_per_class=2)
    test = torch.randn(20, DIM, generator=torch.Generator().manual_seed(5))  # far from every cluster: no saturation
    classifier = clipmodel.fit_few_shot(method="prototype", shot_features=shots, shot_labels=shot_labels,
                                        num_classes=NUM_CLASSES)
    normed = F.normalize(shots, dim=1)
    prototypes = F.normalize(torch.stack([normed[shot_labels == c].mean(dim=0) for c in range(NUM_CLASSES)]), dim=1)
    expected = (100.0 * F.normalize(test, dim=1) @ prototypes.T).softmax(dim=1)
    torch.testing.assert_close(classifier.predict_proba(test), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", clipmodel.FEW_SHOT_METHODS)
def test_labels_as_a_list_or_an_int32_array_give_the_same_classifier_as_a_long_tensor(method):
    shots, shot_labels, _, _, text_weights = _separable_set(shots_per_class=2)

    def fit(labels):
        return clipmodel.fit_few_shot(method=method, shot_features=shots, shot_labels=labels, num_classes=NUM_CLASSES,
                                      text_weights=text_weights, prior_lambda=1.0)

    reference = fit(shot_labels)
    for labels in (shot_labels.tolist(), shot_labels.numpy().astype("int32"), shot_labels.int()):
        other = fit(labels)
        assert torch.equal(other.weight, reference.weight) and torch.equal(other.bias, reference.bias)


@pytest.mark.parametrize("method", clipmodel.FEW_SHOT_METHODS)
def test_features_in_double_or_half_precision_are_classified_like_float32_ones(method):
    shots, shot_labels, test, _, text_weights = _separable_set(shots_per_class=2)
    classifier = clipmodel.fit_few_shot(method=method, shot_features=shots.half(), shot_labels=shot_labels,
                                        num_classes=NUM_CLASSES, text_weights=text_weights, prior_lambda=1.0)
    expected = classifier.predict_proba(test)
    assert expected.dtype == torch.float32
    torch.testing.assert_close(classifier.predict_proba(test.double()), expected)
    torch.testing.assert_close(classifier.predict_proba(test.half()), expected, rtol=0, atol=2e-2)


def test_shot_features_that_are_not_one_row_per_label_are_rejected_with_the_reason():
    shots, shot_labels, _, _, text_weights = _separable_set(shots_per_class=1)
    why = r"^shot_features must be \[N, D\] with one label per row \(N > 0\)$"
    for features, labels in [
        (shots, shot_labels[:-1]),  # one label missing
        (shots[:, 0], shot_labels),  # a vector of N numbers, not N feature rows
        (shots[:0], shot_labels[:0]),  # no shots at all
    ]:
        for method in clipmodel.FEW_SHOT_METHODS:
            with pytest.raises(ValueError, match=why):
                clipmodel.fit_few_shot(method=method, shot_features=features, shot_labels=labels,
                                       num_classes=NUM_CLASSES, text_weights=text_weights)


def test_a_single_shot_is_enough_for_the_methods_that_allow_classes_without_shots():
    shots, shot_labels, _, _, text_weights = _separable_set(shots_per_class=1)
    for method in ("linear-probe", "zero-shot-prior"):
        classifier = clipmodel.fit_few_shot(method=method, shot_features=shots[2:3], shot_labels=shot_labels[2:3],
                                            num_classes=NUM_CLASSES, text_weights=text_weights, prior_lambda=1.0)
        assert classifier.shots_per_class.tolist() == [0, 0, 1, 0, 0]
        assert classifier.predict_proba(shots[2:3]).argmax().item() == 2


def test_the_prototypes_name_the_classes_that_have_no_shot():
    shots, shot_labels, _, _, _ = _separable_set(shots_per_class=1)
    keep = (shot_labels != 1) & (shot_labels != 3)
    with pytest.raises(ValueError, match=r"none for classes \[1, 3\]$"):
        clipmodel.fit_few_shot(method="prototype", shot_features=shots[keep], shot_labels=shot_labels[keep],
                               num_classes=NUM_CLASSES)


SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="module")
def real_images():
    """80 real EuroSAT images, 8 per class, from the shared data."""
    if not (SHARED_DATA / "eurosat" / "manifest.csv").is_file():
        pytest.skip(f"the shared data is not at {SHARED_DATA} (see README: ../shared/data beside the checkout)")
    from clipmodel.data import read_manifest

    items = [i for i in read_manifest(data_root=SHARED_DATA, dataset="eurosat") if i.split == "train"]
    return [i for c in range(10) for i in [j for j in items if j.label == c][:8]]


def _real_features(tiny_clip, chosen):
    """Features of the images from a tiny random-weight CLIP (real image statistics, not a synthetic toy);
    classes get 1 to 3 shots each (unequal, so the bias matters), the rest is test."""
    features = clipmodel.encode_images(clip=tiny_clip, images=[i.path for i in chosen], num_workers=0)
    labels = torch.tensor([i.label for i in chosen])
    n_shots = torch.tensor([1 + c % 3 for c in range(10)])
    rank = torch.cat([torch.arange(8) for _ in range(10)])
    is_shot = rank < n_shots[labels]
    return features[is_shot], labels[is_shot], features[~is_shot]


@pytest.mark.parametrize("c", [DEFAULT_C, 10.0])
def test_the_linear_probe_is_scikit_learns_multinomial_logistic_regression_on_real_features(real_images, tiny_clip, c):
    from sklearn.linear_model import LogisticRegression

    shots, shot_labels, test = _real_features(tiny_clip, real_images)
    ours = clipmodel.fit_few_shot(method="linear-probe", shot_features=shots, shot_labels=shot_labels,
                                  num_classes=10, C=c)
    normed = F.normalize(shots.double(), dim=1).numpy()
    reference = LogisticRegression(C=c, tol=1e-12, max_iter=100_000).fit(normed, shot_labels.numpy())
    expected = torch.from_numpy(reference.predict_proba(F.normalize(test.double(), dim=1).numpy())).float()
    torch.testing.assert_close(ours.predict_proba(test), expected, rtol=0, atol=2e-5)
    # The same parameters, not just the same probabilities (scikit-learn also leaves the bias unpenalised).
    torch.testing.assert_close(ours.weight, torch.from_numpy(reference.coef_).float(), rtol=0, atol=1e-3)
    torch.testing.assert_close(ours.bias, torch.from_numpy(reference.intercept_).float(), rtol=0, atol=1e-3)
